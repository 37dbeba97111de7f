//! Pure ranking arithmetic for the optional embeddings: cosine similarity and reciprocal rank
//! fusion. No IO; compiled in every build so the rules are tested in every build.

/// The `k` of reciprocal rank fusion (Cormack et al.'s 60): it damps the top ranks so that
/// one list's first place does not drown the other list's opinion.
pub const RRF_K: f64 = 60.0;

/// Cosine similarity of two vectors; 0 when either is zero or their lengths differ.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}

/// Fuses rankings (each best first) by reciprocal rank: an item scores the sum over the lists
/// holding it of `1 / (k + rank)`, rank from 1. Best first; ties by first appearance.
pub fn reciprocal_rank_fusion<T: Clone + PartialEq>(lists: &[Vec<T>], k: f64) -> Vec<(T, f64)> {
    let mut out: Vec<(T, f64)> = Vec::new();
    for list in lists {
        for (i, item) in list.iter().enumerate() {
            let s = 1.0 / (k + (i + 1) as f64);
            match out.iter_mut().find(|(t, _)| t == item) {
                Some((_, score)) => *score += s,
                None => out.push((item.clone(), s)),
            }
        }
    }
    // Stable: equal scores keep the order of first appearance.
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// A vector as stored: little-endian f32s.
pub fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_in_both_lists_beats_one_first_in_a_single_list() {
        let fused = reciprocal_rank_fusion(&[vec![1, 2, 3], vec![3, 4]], RRF_K);
        assert_eq!(fused[0].0, 3);
        assert_eq!(fused.len(), 4);
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-12);
    }

    #[test]
    fn cosine_of_parallel_orthogonal_and_zero_vectors() {
        assert!((cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 1.0]), 0.0);
    }

    #[test]
    fn blobs_round_trip() {
        let v = vec![0.5f32, -1.25, 3.0];
        assert_eq!(from_blob(&to_blob(&v)), v);
    }
}
