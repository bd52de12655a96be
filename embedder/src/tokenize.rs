//! Text to model inputs: the model's own tokenizer, truncated to our limit, padded only to the batch's longest.

use std::path::Path;

use tokenizers::{
    Encoding, PostProcessor, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::{Error, Result};

/// Padded `[batch, seq]` tensors for one model run, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    pub input_ids: Vec<i64>,
    pub attention_mask: Vec<i64>,
    pub token_type_ids: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
}

/// Wraps a Hugging Face tokenizer with the embedder's truncation and padding rules.
///
/// The `tokenizer.json` files of sentence-transformers models carry their own truncation and
/// fixed padding (128 for all-MiniLM-L6-v2). Fixed padding would make a five-word question cost as
/// much as a paragraph, so padding is removed here and done per batch by [`BatchTokenizer::pack`].
#[derive(Debug, Clone)]
pub struct BatchTokenizer {
    tokenizer: Tokenizer,
    pad_id: i64,
    pad_type_id: i64,
    max_tokens: usize,
}

impl BatchTokenizer {
    /// Reads `tokenizer.json` and applies the truncation limit.
    pub fn load(path: &Path, max_tokens: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::MissingAsset {
                what: "tokenizer",
                path: path.to_path_buf(),
            });
        }
        let tokenizer = Tokenizer::from_file(path).map_err(|source| Error::LoadTokenizer {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(tokenizer, max_tokens)
    }

    /// Applies the truncation limit to an already loaded tokenizer.
    pub fn new(mut tokenizer: Tokenizer, max_tokens: usize) -> Result<Self> {
        let n_special_tokens = tokenizer
            .get_post_processor()
            .map_or(0, |processor| processor.added_tokens(false));
        if max_tokens <= n_special_tokens {
            return Err(Error::InvalidConfig {
                field: "max_tokens",
                reason: format!(
                    "{max_tokens} leaves no room for text after the tokenizer's {n_special_tokens} special tokens"
                ),
            });
        }
        // The file's padding settings still tell which id pads; only the strategy is dropped.
        let (pad_id, pad_type_id) = tokenizer
            .get_padding()
            .map_or((0, 0), |padding| (padding.pad_id, padding.pad_type_id));
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length: max_tokens,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|source| Error::InvalidConfig {
                field: "max_tokens",
                reason: source.to_string(),
            })?;
        Ok(Self {
            tokenizer,
            pad_id: i64::from(pad_id),
            pad_type_id: i64::from(pad_type_id),
            max_tokens,
        })
    }

    /// The truncation limit, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes each text on its own (truncated, unpadded).
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Encoding>> {
        self.tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(Error::Tokenize)
    }

    /// Pads encodings to the longest of them and lays them out as model inputs.
    pub fn pack(&self, encodings: &[&Encoding]) -> TokenBatch {
        let batch = encodings.len();
        let seq = encodings
            .iter()
            .map(|encoding| encoding.len())
            .max()
            .unwrap_or(0);
        let mut packed = TokenBatch {
            input_ids: vec![self.pad_id; batch * seq],
            attention_mask: vec![0; batch * seq],
            token_type_ids: vec![self.pad_type_id; batch * seq],
            batch,
            seq,
        };
        for (row, encoding) in encodings.iter().enumerate() {
            let start = row * seq;
            let widen = |values: &[u32], out: &mut [i64]| {
                for (slot, value) in out.iter_mut().zip(values) {
                    *slot = i64::from(*value);
                }
            };
            widen(
                encoding.get_ids(),
                &mut packed.input_ids[start..start + seq],
            );
            widen(
                encoding.get_attention_mask(),
                &mut packed.attention_mask[start..start + seq],
            );
            widen(
                encoding.get_type_ids(),
                &mut packed.token_type_ids[start..start + seq],
            );
        }
        packed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BERT-like tokenizer with the same fixed padding and truncation to 128 that the real
    /// all-MiniLM-L6-v2 `tokenizer.json` carries, so the overrides are tested without assets.
    fn tiny_tokenizer() -> Tokenizer {
        let json = r###"{
          "version": "1.0",
          "truncation": {"direction": "Right", "max_length": 128, "strategy": "LongestFirst", "stride": 0},
          "padding": {"strategy": {"Fixed": 128}, "direction": "Right", "pad_to_multiple_of": null,
                      "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
          "added_tokens": [],
          "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                         "strip_accents": null, "lowercase": true},
          "pre_tokenizer": {"type": "BertPreTokenizer"},
          "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {
              "[CLS]": {"id": "[CLS]", "ids": [101], "tokens": ["[CLS]"]},
              "[SEP]": {"id": "[SEP]", "ids": [102], "tokens": ["[SEP]"]}
            }
          },
          "decoder": null,
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                    "max_input_chars_per_word": 100,
                    "vocab": {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102,
                              "hello": 7, "world": 8, "cache": 9}}
        }"###;
        json.parse().expect("tiny tokenizer json")
    }

    fn tokenizer(max_tokens: usize) -> BatchTokenizer {
        BatchTokenizer::new(tiny_tokenizer(), max_tokens).expect("tokenizer")
    }

    #[test]
    fn single_input_is_not_padded_to_the_files_fixed_length() {
        let tokenizer = tokenizer(256);
        let encodings = tokenizer.encode(&["hello world"]).expect("encode");
        let packed = tokenizer.pack(&encodings.iter().collect::<Vec<_>>());
        assert_eq!(packed.seq, 4);
        assert_eq!(packed.input_ids, vec![101, 7, 8, 102]);
        assert_eq!(packed.attention_mask, vec![1, 1, 1, 1]);
    }

    #[test]
    fn batch_is_padded_to_its_longest_input() {
        let tokenizer = tokenizer(256);
        let encodings = tokenizer
            .encode(&["hello", "hello world cache"])
            .expect("encode");
        let packed = tokenizer.pack(&encodings.iter().collect::<Vec<_>>());
        assert_eq!((packed.batch, packed.seq), (2, 5));
        assert_eq!(packed.input_ids, vec![101, 7, 102, 0, 0, 101, 7, 8, 9, 102]);
        assert_eq!(packed.attention_mask, vec![1, 1, 1, 0, 0, 1, 1, 1, 1, 1]);
        assert_eq!(packed.token_type_ids, vec![0; 10]);
    }

    #[test]
    fn truncates_at_the_configured_limit_not_the_files() {
        let long = "hello ".repeat(300);
        for max_tokens in [8, 200, 256] {
            let encodings = tokenizer(max_tokens).encode(&[&long]).expect("encode");
            assert_eq!(encodings[0].len(), max_tokens);
            assert_eq!(encodings[0].get_ids().last(), Some(&102), "[SEP] is kept");
        }
    }

    #[test]
    fn empty_text_is_just_the_special_tokens() {
        let tokenizer = tokenizer(256);
        let encodings = tokenizer.encode(&["", "   "]).expect("encode");
        assert_eq!(encodings[0].get_ids(), &[101, 102]);
        assert_eq!(encodings[1].get_ids(), &[101, 102]);
    }

    #[test]
    fn limit_must_leave_room_for_text() {
        let error =
            BatchTokenizer::new(tiny_tokenizer(), 2).expect_err("2 tokens is only [CLS] [SEP]");
        assert!(error.to_string().contains("max_tokens"), "{error}");
    }

    #[test]
    fn missing_file_names_the_path_and_the_fix() {
        let error = BatchTokenizer::load(Path::new("/nonexistent/tokenizer.json"), 256)
            .expect_err("missing file");
        let message = error.to_string();
        assert!(message.contains("/nonexistent/tokenizer.json"), "{message}");
        assert!(message.contains("scripts/fetch-assets"), "{message}");
    }
}
