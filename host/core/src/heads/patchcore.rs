//! PatchCore: a memory bank of good patch embeddings, thinned by a greedy k-centre
//! coreset, scored by the distance of each test patch to its nearest neighbour.

use faer::{Accum, Mat, MatRef, Par, linalg::matmul::matmul};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::embed::Patches;

/// Dimensions of the random projection the coreset search runs in.
pub const PROJECTION_DIM: usize = 128;

/// Bank rows per GEMM block when searching.
const SEARCH_BLOCK: usize = 1024;

/// Query patches per GEMM block when searching: with [`SEARCH_BLOCK`] the 1 MB scratch
/// matrix stays in L2.
const QUERY_BLOCK: usize = 256;

/// A fitted PatchCore model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchCore {
    /// Values per patch.
    pub dim: usize,
    /// Memory bank `[rows, dim]`, row-major.
    pub bank: Vec<f32>,
}

/// Sparse random projection `[dim, out]` (Achlioptas): entries ±√(3/out) with
/// probability 1/6 each, else 0. Preserves distances well enough to pick coreset centres.
fn projection(dim: usize, out: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = (3.0 / out as f32).sqrt();
    (0..dim * out)
        .map(|_| match rng.random_range(0..6u8) {
            0 => v,
            1 => -v,
            _ => 0.0,
        })
        .collect()
}

/// Row-major `a [n, k] × b [k, m]`, using both cores.
fn gemm(a: &[f32], n: usize, k: usize, b: &[f32], m: usize, par: Par) -> Vec<f32> {
    let mut out = Mat::<f32>::zeros(n, m);
    matmul(
        out.as_mut(),
        Accum::Replace,
        MatRef::from_row_major_slice(a, n, k),
        MatRef::from_row_major_slice(b, k, m),
        1.0,
        par,
    );
    let mut flat = Vec::with_capacity(n * m);
    for i in 0..n {
        flat.extend((0..m).map(|j| out[(i, j)]));
    }
    flat
}

/// Projected rows quantised to 8-bit levels with one scale for all dimensions (so
/// Euclidean order is kept), stored as `i16` so that the distance kernel is one subtract
/// and one multiply-add-pairs per 8 lanes even on baseline x86-64 (no widening step).
/// Half the f32 bytes: the greedy pass streams the whole set once per chosen centre.
struct Quantised {
    rows: Vec<i16>,
    dim: usize,
}

impl Quantised {
    fn new(y: &[f32], dim: usize) -> Self {
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if peak > 0.0 { 127.0 / peak } else { 1.0 };
        Self { rows: y.iter().map(|v| (v * scale).round() as i16).collect(), dim }
    }
}

/// Squared distance of two quantised rows (|levels| ≤ 127, so no lane overflows).
#[inline]
fn dist2_q(a: &[i16], b: &[i16]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x - y;
            (d as i32) * (d as i32)
        })
        .sum()
}

/// A coreset and which centre each candidate row ended up nearest to.
#[derive(Debug, Clone)]
pub struct Coreset {
    /// Rows chosen as centres, in the order the greedy pass chose them.
    pub chosen: Vec<usize>,
    /// For every row, the position in `chosen` of its nearest centre.
    pub nearest: Vec<u32>,
    /// For every row, its squared distance to that centre (projected, quantised levels).
    pub distance: Vec<i32>,
}

/// Greedy k-centre coreset: indices of `k` rows of `x` (`[n, dim]`) such that every row
/// is close to one of them. Runs in a random projection to `PROJECTION_DIM` dimensions,
/// quantised to 8-bit levels.
pub fn coreset(x: &[f32], dim: usize, k: usize, seed: u64, progress: impl FnMut(usize)) -> Vec<usize> {
    coreset_assigned(x, dim, k, seed, progress).chosen
}

/// [`coreset`], also telling which centre each row is nearest to (for fold banks).
pub fn coreset_assigned(
    x: &[f32],
    dim: usize,
    k: usize,
    seed: u64,
    mut progress: impl FnMut(usize),
) -> Coreset {
    let n = x.len() / dim;
    if k >= n {
        return Coreset { chosen: (0..n).collect(), nearest: (0..n as u32).collect(), distance: vec![0; n] };
    }
    let q = if dim > PROJECTION_DIM {
        let y = gemm(x, n, dim, &projection(dim, PROJECTION_DIM, seed), PROJECTION_DIM, Par::rayon(0));
        Quantised::new(&y, PROJECTION_DIM)
    } else {
        Quantised::new(x, dim)
    };
    let d = q.dim;
    // Each row's squared distance to its nearest chosen centre, and which centre that is.
    // A new centre `c` can only come closer to row `x` (nearest centre `a`) than `a` is if
    // |c − a| < 2·|x − a| (triangle inequality), so most rows are skipped once centres
    // are spread out. Integer distances keep the pruning exact.
    let mut min_d2 = vec![i32::MAX; n];
    let mut nearest = vec![u32::MAX; n];
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut next = ChaCha8Rng::seed_from_u64(seed ^ 0xC0DE).random_range(0..n);
    const CHUNK: usize = 8192;
    for step in 0..k {
        let c = q.rows[next * d..(next + 1) * d].to_vec();
        // Squared distance from the new centre to every earlier one.
        let to_centre: Vec<i64> =
            chosen.iter().map(|&j| dist2_q(&q.rows[j * d..(j + 1) * d], &c) as i64).collect();
        chosen.push(next);
        let (far, _) = min_d2
            .par_chunks_mut(CHUNK)
            .zip(nearest.par_chunks_mut(CHUNK))
            .zip(q.rows.par_chunks(CHUNK * d))
            .enumerate()
            .map(|(ci, ((md, near), rows))| {
                let mut best = (0usize, i32::MIN);
                for (i, ((m, a), row)) in
                    md.iter_mut().zip(near.iter_mut()).zip(rows.chunks_exact(d)).enumerate()
                {
                    let may_move = match to_centre.get(*a as usize) {
                        Some(&ca) => ca < 4 * *m as i64,
                        None => true,
                    };
                    if may_move {
                        let d2 = dist2_q(row, &c);
                        if d2 < *m {
                            *m = d2;
                            *a = step as u32;
                        }
                    }
                    if *m > best.1 {
                        best = (ci * CHUNK + i, *m);
                    }
                }
                best
            })
            .reduce(|| (0, i32::MIN), |a, b| if b.1 > a.1 { b } else { a });
        next = far;
        progress(step + 1);
    }
    Coreset { chosen, nearest, distance: min_d2 }
}

impl PatchCore {
    /// Build the bank from candidate patch rows (`[n, dim]`), keeping `ratio` of them.
    pub fn fit(all: Vec<f32>, dim: usize, ratio: f64, seed: u64, progress: impl FnMut(usize)) -> Self {
        let n = all.len() / dim;
        let k = ((n as f64 * ratio).ceil() as usize).clamp(1, n);
        let idx = coreset(&all, dim, k, seed, progress);
        let bank = idx.iter().flat_map(|&i| all[i * dim..(i + 1) * dim].iter().copied()).collect();
        Self { dim, bank }
    }

    /// [`Self::fit`], plus one bank per fold that holds no row of that fold's images.
    ///
    /// `row_fold[i]` is the fold of the image candidate row `i` came from. A fold's bank is
    /// the full bank with each centre taken from that fold replaced by the row nearest to
    /// it among the rows it covers from other folds (dropped when it covers none). Scoring
    /// a fold's images against its bank is then scoring images the bank never saw, at the
    /// cost of one search per fold instead of one greedy pass per fold; a test bounds how
    /// far it can drift from a coreset refitted without the fold.
    pub fn fit_folds(
        all: Vec<f32>,
        dim: usize,
        ratio: f64,
        seed: u64,
        row_fold: &[u16],
        folds: usize,
        progress: impl FnMut(usize),
    ) -> (Self, Vec<Self>) {
        let n = all.len() / dim;
        assert_eq!(row_fold.len(), n, "one fold per candidate row");
        let k = ((n as f64 * ratio).ceil() as usize).clamp(1, n);
        let c = coreset_assigned(&all, dim, k, seed, progress);
        let row = |i: usize| &all[i * dim..(i + 1) * dim];
        // Per centre, the closest covered row of each other fold is found in one pass.
        let mut stand_in: Vec<Vec<Option<(i32, usize)>>> = vec![vec![None; folds]; c.chosen.len()];
        for (i, (&a, &d)) in c.nearest.iter().zip(&c.distance).enumerate() {
            let slot = &mut stand_in[a as usize][row_fold[i] as usize];
            if slot.is_none_or(|(best, _)| d < best) {
                *slot = Some((d, i));
            }
        }
        let fold_banks = (0..folds as u16)
            .map(|f| {
                let mut bank = Vec::with_capacity(c.chosen.len() * dim);
                for (j, &centre) in c.chosen.iter().enumerate() {
                    if row_fold[centre] != f {
                        bank.extend_from_slice(row(centre));
                    } else if let Some((_, i)) = stand_in[j]
                        .iter()
                        .enumerate()
                        .filter(|(g, _)| *g != f as usize)
                        .filter_map(|(_, s)| *s)
                        .min()
                    {
                        bank.extend_from_slice(row(i));
                    }
                }
                Self { dim, bank }
            })
            .collect();
        let bank = c.chosen.iter().flat_map(|&i| row(i).iter().copied()).collect();
        (Self { dim, bank }, fold_banks)
    }

    /// Rows in the bank.
    pub fn rows(&self) -> usize {
        self.bank.len() / self.dim
    }

    /// Distance from each patch to its nearest bank row (the patch-score grid).
    ///
    /// `‖q − b‖² = ‖q‖² + ‖b‖² − 2 q·b`, with the dot products from a GEMM. Queries and
    /// bank rows go in blocks whose product fits in L2 and reuses one scratch matrix:
    /// a full `queries × bank` matrix would be tens of MB, freshly page-faulted on
    /// every image.
    pub fn score(&self, p: &Patches, par: Par) -> Vec<f32> {
        assert_eq!(p.dim, self.dim, "patch dimension differs from the bank's");
        let dim = self.dim;
        let q = p.rows();
        let sq = |r: &[f32]| r.iter().map(|v| v * v).sum::<f32>();
        let bn: Vec<f32> = self.bank.chunks_exact(dim).map(sq).collect();
        let mut best = vec![f32::INFINITY; q];
        let mut scratch = Mat::<f32>::zeros(QUERY_BLOCK.min(q), SEARCH_BLOCK.min(bn.len()));
        for (queries, best) in p.data.chunks(QUERY_BLOCK * dim).zip(best.chunks_mut(QUERY_BLOCK)) {
            let qr = best.len();
            for (block, bn) in self.bank.chunks(SEARCH_BLOCK * dim).zip(bn.chunks(SEARCH_BLOCK)) {
                let mut dots = scratch.as_mut().submatrix_mut(0, 0, qr, bn.len());
                matmul(
                    dots.as_mut(),
                    Accum::Replace,
                    MatRef::from_row_major_slice(queries, qr, dim),
                    MatRef::from_row_major_slice(block, bn.len(), dim).transpose(),
                    1.0,
                    par,
                );
                // Column by column: faer matrices are column-major, so this walks memory
                // in order and vectorises. `‖q‖²` is added once at the end.
                for (j, n) in bn.iter().enumerate() {
                    let col = dots.as_ref().col(j).try_as_col_major().expect("contiguous column").as_slice();
                    for (b, d) in best.iter_mut().zip(col) {
                        *b = b.min(n - 2.0 * d);
                    }
                }
            }
        }
        best.iter().zip(p.data.chunks_exact(dim)).map(|(d2, row)| (d2 + sq(row)).max(0.0).sqrt()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patches(rows: Vec<Vec<f32>>) -> Patches {
        let dim = rows[0].len();
        Patches { h: 1, w: rows.len(), dim, data: rows.concat() }
    }

    #[test]
    fn coreset_covers_every_cluster() {
        // Four tight clusters of 50 points; 4 centres must land one per cluster.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let centres = [[0.0f32, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]];
        let mut x = Vec::new();
        for c in centres {
            for _ in 0..50 {
                x.extend([c[0] + rng.random_range(-0.1..0.1), c[1] + rng.random_range(-0.1..0.1)]);
            }
        }
        let idx = coreset(&x, 2, 4, 7, |_| ());
        let mut clusters: Vec<usize> = idx.iter().map(|i| i / 50).collect();
        clusters.sort();
        assert_eq!(clusters, vec![0, 1, 2, 3]);
    }

    #[test]
    fn fold_banks_hold_no_row_of_their_fold_and_score_like_a_refit() {
        // 10 "images" of 300 rows around shared cluster centres, plus a few rows only
        // that image has (what makes a good image's out-of-sample score high).
        let (dim, images, per) = (8, 10, 300);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let centres: Vec<Vec<f32>> =
            (0..12).map(|_| (0..dim).map(|_| rng.random_range(-4.0..4.0)).collect()).collect();
        let (mut rows, mut row_fold) = (Vec::new(), Vec::new());
        for image in 0..images {
            let own: Vec<f32> = (0..dim).map(|_| rng.random_range(-6.0..6.0)).collect();
            for r in 0..per {
                let c = if r < 5 { &own } else { &centres[rng.random_range(0..centres.len())] };
                rows.extend(c.iter().map(|v| v + rng.random_range(-0.3..0.3)));
                row_fold.push((image % 5) as u16);
            }
        }
        let (full, folds) = PatchCore::fit_folds(rows.clone(), dim, 0.05, 1, &row_fold, 5, |_| ());
        assert_eq!(folds.len(), 5);
        for (f, bank) in folds.iter().enumerate() {
            let own: Vec<&[f32]> = rows
                .chunks_exact(dim)
                .zip(&row_fold)
                .filter(|(_, g)| **g as usize == f)
                .map(|(r, _)| r)
                .collect();
            for b in bank.bank.chunks_exact(dim) {
                assert!(!own.contains(&b), "fold {f}'s bank holds one of its own rows");
            }
            assert!(
                bank.rows() <= full.rows() && bank.rows() + 20 >= full.rows(),
                "{} vs {}",
                bank.rows(),
                full.rows()
            );
            // Against a coreset refitted without the fold, on the fold's own rows.
            let rest: Vec<f32> = rows
                .chunks_exact(dim)
                .zip(&row_fold)
                .filter(|(_, g)| **g as usize != f)
                .flat_map(|(r, _)| r.iter().copied())
                .collect();
            let refit = PatchCore::fit(rest, dim, 0.05, 1, |_| ());
            let q = patches(own.iter().map(|r| r.to_vec()).collect());
            let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
            let (a, b) = (mean(bank.score(&q, Par::Seq)), mean(refit.score(&q, Par::Seq)));
            assert!((a - b).abs() < 0.15 * b, "fold {f}: stand-in bank {a} vs refit {b}");
            // Out of sample scores more than in sample: the fold's own rows are gone.
            assert!(a > mean(full.score(&q, Par::Seq)), "fold {f}");
        }
    }

    #[test]
    fn score_is_exact_nearest_neighbour_distance() {
        let bank = PatchCore { dim: 3, bank: vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 5.0, 0.0, 0.0] };
        let q = patches(vec![vec![0.0, 0.0, 0.0], vec![4.0, 0.0, 0.0], vec![1.0, 1.0, 2.0]]);
        let s = bank.score(&q, Par::Seq);
        let expected = [0.0, 1.0, 1.0];
        for (a, b) in s.iter().zip(expected) {
            assert!((a - b).abs() < 1e-3, "{s:?}");
        }
    }

    #[test]
    fn score_handles_banks_larger_than_one_block() {
        let n = SEARCH_BLOCK + 10;
        let bank: Vec<f32> = (0..n).flat_map(|i| [i as f32 * 1e-3, 0.0]).collect();
        let pc = PatchCore { dim: 2, bank };
        // The nearest row of the first query lives in the second block.
        let q = patches(vec![vec![(n - 1) as f32 * 1e-3 + 0.3, 0.4], vec![-3.0, 0.0]]);
        let s = pc.score(&q, Par::Seq);
        assert!((s[0] - 0.5).abs() < 1e-3 && (s[1] - 3.0).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn blocked_search_matches_brute_force_across_block_edges() {
        // Query and bank counts straddle their block sizes so partial blocks are searched.
        let (dim, nq, nb) = (5, QUERY_BLOCK * 2 + 7, SEARCH_BLOCK * 2 + 3);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let bank: Vec<f32> = (0..nb * dim).map(|_| rng.random_range(-1.0..1.0)).collect();
        let rows: Vec<Vec<f32>> =
            (0..nq).map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect()).collect();
        let pc = PatchCore { dim, bank };
        let s = pc.score(&patches(rows.clone()), Par::Seq);
        for (row, got) in rows.iter().zip(&s) {
            let want = pc
                .bank
                .chunks_exact(dim)
                .map(|b| b.iter().zip(row).map(|(x, y)| (x - y) * (x - y)).sum::<f32>())
                .fold(f32::INFINITY, f32::min)
                .sqrt();
            assert!((got - want).abs() < 1e-4, "{got} vs brute force {want}");
        }
    }
}
