//! A deterministic OpenAI-compatible `POST .../embeddings`: a hashed bag of words, so tests of
//! embedding search need no model. A few synonyms are folded onto one word first, which is
//! what lets a test show a query found by meaning that shares no word with what it finds.

use serde_json::{Value, json};

/// Length of every vector.
pub const DIMENSIONS: usize = 64;

/// Words folded onto another before hashing (the "meaning" the test server knows).
pub const SYNONYMS: &[(&str, &str)] = &[
    ("rollback", "reversible"),
    ("revert", "reversible"),
    ("undo", "reversible"),
    ("schema", "database"),
    ("db", "database"),
    ("changes", "migrations"),
];

/// The unit vector of `text`: each word (lowercase, synonyms folded) adds 1 to the dimension
/// its FNV-1a hash picks.
pub fn embed(text: &str) -> Vec<f32> {
    let mut v = vec![0f32; DIMENSIONS];
    for word in text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = SYNONYMS
            .iter()
            .find(|(from, _)| *from == word)
            .map_or(word, |(_, to)| to);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % DIMENSIONS as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// The response to an embeddings request body (`input`: a string or a list of them), or a
/// 400 message.
pub fn respond(body: &Value) -> Result<Value, String> {
    let inputs: Vec<&str> = match body.get("input") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().ok_or("`input` items must be strings"))
            .collect::<Result<_, _>>()?,
        _ => return Err("`input` must be a string or a list of strings".into()),
    };
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": embed(t)}))
        .collect();
    Ok(json!({"object": "list", "data": data, "model": model,
              "usage": {"prompt_tokens": 0, "total_tokens": 0}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synonyms_share_a_vector_and_other_words_do_not() {
        assert_eq!(embed("schema rollback"), embed("Database reversible"));
        assert_ne!(embed("schema"), embed("rustfmt"));
        let n: f32 = embed("a b c").iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5);
    }

    #[test]
    fn a_list_answers_in_order_and_a_bad_input_is_refused() {
        let v = respond(&json!({"model": "m", "input": ["x", "y"]})).unwrap();
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(
            v["data"][1]["embedding"].as_array().unwrap().len(),
            DIMENSIONS
        );
        assert!(respond(&json!({"input": 3})).is_err());
    }
}
