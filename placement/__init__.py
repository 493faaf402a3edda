"""Placement: how work finds a site with no scheduler (sans-IO cores).

* :mod:`.view` -- the read interface over gossip (:class:`~.view.ClusterView`),
  an in-memory one for tests; :mod:`.gossip_view` -- the adapter over the real
  gossip state;
* :mod:`.hashing` -- weighted rendezvous candidates with bounded load;
* :mod:`.cost` and :mod:`.classes` -- what a bid costs, per workload class;
* :mod:`.bidding` -- broker and executor (bidder) cores;
* :mod:`.custody` -- job records held by R custodians, re-placement by epoch;
* :mod:`.core` -- the three roles as one core (protocol ``place``);
* :mod:`.messages` -- wire types (tags 0x0500-0x05FF);
* :mod:`.simrt` -- a simulated site and runtime for the simulator and tests.

Nothing is imported here: importing the package stays cheap.
"""
