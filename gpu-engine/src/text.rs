//! Text in and out: the tokenizer, the chat template, and incremental detokenization with stop strings.

use std::path::Path;

use serde::Serialize;
use tokenizers::Tokenizer;

use crate::checkpoint::read_json;
use crate::{Error, Result};

/// One chat message as the template sees it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// The checkpoint's tokenizer and chat template.
#[derive(Debug)]
pub struct TextCodec {
    tokenizer: Tokenizer,
    chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

#[derive(serde::Deserialize, Default)]
struct TokenizerConfig {
    chat_template: Option<serde_json::Value>,
    bos_token: Option<serde_json::Value>,
    eos_token: Option<serde_json::Value>,
}

/// tokenizer_config.json stores special tokens either as strings or as AddedToken objects.
fn token_text(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

/// A template may be a string or a list of named templates; the one named "default" wins.
fn template_text(value: Option<serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Array(items) => items.iter().find_map(|item| {
            (item.get("name")?.as_str()? == "default")
                .then(|| item.get("template")?.as_str().map(str::to_owned))
                .flatten()
        }),
        _ => None,
    }
}

impl TextCodec {
    /// Loads tokenizer.json and, if present, tokenizer_config.json from a checkpoint folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&path).map_err(|source| Error::Tokenizer {
            path: path.clone(),
            source,
        })?;
        let config_path = dir.join("tokenizer_config.json");
        let config: TokenizerConfig = if config_path.exists() {
            read_json(&config_path)?
        } else {
            TokenizerConfig::default()
        };
        Ok(Self {
            tokenizer,
            chat_template: template_text(config.chat_template),
            bos_token: token_text(config.bos_token),
            eos_token: token_text(config.eos_token),
        })
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(Error::Tokenize)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Text of `ids`, without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer.decode(ids, true).map_err(Error::Tokenize)
    }

    /// Renders messages with the checkpoint's chat template, as transformers'
    /// `apply_chat_template(add_generation_prompt=True)` does.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or(Error::NoChatTemplate)?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<(), minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template("chat", template)?;
        let rendered = env.get_template("chat")?.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        })?;
        Ok(rendered)
    }
}

/// Turns generated token ids into text as they come, and finds stop strings in it.
///
/// Decoding one token at a time breaks multi-byte characters and drops the leading space
/// that some tokenizers attach to a word, so each step decodes a short window of recent
/// tokens and emits only what was added (the approach of text-generation-inference).
/// Text that could still turn into a stop string is held back until it cannot.
#[derive(Debug, Default)]
pub struct OutputText {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
    text: String,
    emitted_bytes: usize,
    stops: Vec<String>,
}

/// What one new token added to the output.
#[derive(Debug, PartialEq, Eq)]
pub struct TextStep {
    /// Text that can be sent to the client now.
    pub delta: String,
    /// A stop string was found; the output ends before it.
    pub stopped: bool,
}

impl OutputText {
    /// Starts empty, watching for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// The whole output text so far (including any held-back part).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Adds one generated token.
    pub fn push(&mut self, codec: &TextCodec, id: u32) -> Result<TextStep> {
        self.ids.push(id);
        let before = codec.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let after = codec.decode(&self.ids[self.prefix_offset..])?;
        if after.len() > before.len() && !after.ends_with('\u{FFFD}') {
            if let Some(added) = after.get(before.len()..) {
                self.text.push_str(added);
            }
            self.prefix_offset = self.read_offset;
            self.read_offset = self.ids.len();
        }
        Ok(self.release(false))
    }

    /// Releases everything still held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        self.release(true).delta
    }

    fn release(&mut self, all: bool) -> TextStep {
        let longest_stop = self.stops.iter().map(String::len).max().unwrap_or(0);
        // A stop string may straddle earlier output, so search a little before it.
        let search_from =
            floor_char_boundary(&self.text, self.emitted_bytes.saturating_sub(longest_stop));
        let found = self
            .stops
            .iter()
            .filter_map(|s| {
                self.text[search_from..]
                    .find(s.as_str())
                    .map(|i| search_from + i)
            })
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            let delta = self.text[self.emitted_bytes.min(at)..].to_owned();
            self.emitted_bytes = self.text.len();
            return TextStep {
                delta,
                stopped: true,
            };
        }
        let hold = if all { 0 } else { self.open_stop_prefix_len() };
        let end = floor_char_boundary(&self.text, self.text.len().saturating_sub(hold));
        let end = end.max(self.emitted_bytes);
        let delta = self.text[self.emitted_bytes..end].to_owned();
        self.emitted_bytes = end;
        TextStep {
            delta,
            stopped: false,
        }
    }
}

impl OutputText {
    /// The length of the longest end of the text that begins some stop string.
    fn open_stop_prefix_len(&self) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                (1..stop.len())
                    .filter(|&k| stop.is_char_boundary(k) && self.text.ends_with(&stop[..k]))
            })
            .max()
            .unwrap_or(0)
    }
}

fn floor_char_boundary(text: &str, mut index: usize) -> usize {
    index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A word-level tokenizer whose decoder joins tokens with nothing, so tokens can
    /// carry their own spaces.
    pub(crate) fn tiny_codec(dir: &Path) -> TextCodec {
        let vocab: Vec<(&str, u32)> = vec![
            ("<unk>", 0),
            ("hello", 1),
            (" world", 2),
            ("!", 3),
            (" STOP", 4),
            ("é", 5),
        ];
        let vocab: serde_json::Map<String, serde_json::Value> = vocab
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into()))
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": null,
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
        });
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"eos_token": "</s>", "chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"}"#,
        )
        .unwrap();
        TextCodec::from_dir(dir).unwrap()
    }

    #[test]
    fn renders_chat_template_with_generation_prompt() {
        let dir = tempfile::tempdir().unwrap();
        let codec = tiny_codec(dir.path());
        let text = codec
            .render_chat(&[ChatMessage {
                role: "user".into(),
                content: "hi".into(),
            }])
            .unwrap();
        assert_eq!(text, "<user>hi\n<assistant>");
    }

    fn run(stops: &[&str], ids: &[u32]) -> (Vec<String>, bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let codec = tiny_codec(dir.path());
        let mut out = OutputText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut deltas = Vec::new();
        for &id in ids {
            let step = out.push(&codec, id).unwrap();
            deltas.push(step.delta);
            if step.stopped {
                return (deltas, true, out.text().to_owned());
            }
        }
        deltas.push(out.finish());
        (deltas, false, out.text().to_owned())
    }

    #[test]
    fn streams_deltas_that_add_up_to_the_text() {
        let (deltas, stopped, text) = run(&[], &[1, 2, 3]);
        assert!(!stopped);
        assert_eq!(text, "hello world!");
        assert_eq!(deltas.concat(), text);
    }

    #[test]
    fn stop_string_ends_output_before_it() {
        let (deltas, stopped, text) = run(&[" ST"], &[1, 2, 4, 3]);
        assert!(stopped);
        assert_eq!(text, "hello world");
        assert_eq!(deltas.concat(), "hello world");
    }

    #[test]
    fn possible_stop_prefix_is_held_back_then_released() {
        let (deltas, stopped, _) = run(&["!!"], &[1, 3, 2]);
        assert!(!stopped);
        // "!" might begin "!!", so it is not sent with the token that produced it.
        assert_eq!(deltas[1], "");
        assert_eq!(deltas.concat(), "hello! world");
    }
}
