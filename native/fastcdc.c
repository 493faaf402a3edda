/* FastCDC cut points: the inner loop of content-defined chunking.
 *
 * Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking
 * Approach for Data Deduplication", USENIX ATC 2016: a Gear rolling hash
 * (h = (h << 1) + gear[byte]), cut-point skipping below the minimum size,
 * and normalized chunking (level 2): a harder mask (bits+2 ones) before the
 * average size, an easier one (bits-2 ones) after it, so chunk sizes
 * cluster around the average.
 *
 * The exact rule (arcnet.native.fastcdc documents it and its NumPy twin
 * implements the same one) for a chunk starting at s with r bytes left:
 *
 *   H(p) = sum_{j=0..63} gear[data[p-j]] << j   (mod 2^64): a hash of the
 *          64 bytes ending at p, so a cut depends on local content only.
 *   r <= min_size            -> the chunk is the rest (the last chunk)
 *   end = min(r, max), normal = min(avg, end)
 *   the chunk length is the first L in [min, end) with
 *          H(s+L-1) & (L < normal ? mask_s : mask_l) == 0, else end.
 *
 * min_size >= 64 (checked by the caller), so the 64-byte window of every
 * checked position lies inside the chunk: rolling from s+min-64 gives the
 * exact H without any state from the previous chunk.
 *
 * Streaming: with eof == 0 a chunk is only emitted when at least max bytes
 * remain, because its length could change with more data; the caller keeps
 * the undecided tail and calls again with more bytes appended.
 *
 * The function touches no Python object: cffi (API mode) releases the GIL
 * around the call, so several threads chunk in parallel.
 */
#include <stddef.h>
#include <stdint.h>

size_t arc_fastcdc_cuts(const uint8_t *data, size_t n, int eof,
                        size_t min_size, size_t avg_size, size_t max_size,
                        uint64_t mask_s, uint64_t mask_l,
                        const uint64_t *gear,
                        uint64_t *cuts, size_t cuts_cap)
{
    size_t count = 0;
    size_t start = 0;

    if (min_size < 64 || avg_size < min_size || max_size < avg_size)
        return 0; /* the caller validates; never read out of bounds */

    while (count < cuts_cap && start < n) {
        size_t remaining = n - start;
        size_t len;
        if (!eof && remaining < max_size)
            break; /* undecided: more data could move this cut */
        if (remaining <= min_size) {
            len = remaining;
        } else {
            const uint8_t *p = data + start;
            size_t end = remaining < max_size ? remaining : max_size;
            size_t normal = avg_size < end ? avg_size : end;
            size_t i = min_size - 64;
            uint64_t h = 0;
            /* warm-up: 63 bytes enter the window without a check */
            for (; i < min_size - 1; i++)
                h = (h << 1) + gear[p[i]];
            len = end;
            /* lengths L = i+1 in [min, normal): the harder mask */
            for (; i + 1 < normal; i++) {
                h = (h << 1) + gear[p[i]];
                if (!(h & mask_s)) {
                    len = i + 1;
                    goto found;
                }
            }
            /* lengths in [normal, end): the easier mask */
            for (; i + 1 < end; i++) {
                h = (h << 1) + gear[p[i]];
                if (!(h & mask_l)) {
                    len = i + 1;
                    goto found;
                }
            }
        found:;
        }
        start += len;
        cuts[count++] = (uint64_t)start;
    }
    return count;
}
