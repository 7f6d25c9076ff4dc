//! Incremental detokenization that never emits a broken UTF-8 character.
//!
//! The decoder keeps a small window of token ids (vLLM/TGI's `prefix_offset`/`read_offset`
//! scheme): each new token decodes the window twice, with and without the unread tokens, and
//! emits the difference once it no longer ends in U+FFFD (an incomplete byte sequence). The
//! window starts with the last few prompt tokens so that decoders which strip a leading space
//! (SentencePiece) see the same context as a full decode.

use std::sync::Arc;

use tokenizers::Tokenizer;

use crate::TokenId;
use crate::error::SampleError;

/// Prompt tokens kept as decoding context (vLLM's `INITIAL_INCREMENTAL_DETOKENIZATION_OFFSET`).
const PROMPT_CONTEXT_TOKENS: usize = 5;

/// Per-sequence incremental decoder.
///
/// Invariants: `prefix_offset ≤ read_offset ≤ ids.len()`; the text of `ids[..read_offset]` has
/// been emitted (or is prompt context); every emitted piece is valid UTF-8 and ends on a whole
/// character unless [`IncrementalDetokenizer::flush`] forced it.
#[derive(Clone)]
pub struct IncrementalDetokenizer {
    tokenizer: Arc<Tokenizer>,
    skip_special_tokens: bool,
    ids: Vec<TokenId>,
    prefix_offset: usize,
    read_offset: usize,
}

impl std::fmt::Debug for IncrementalDetokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncrementalDetokenizer")
            .field("ids", &self.ids)
            .field("prefix_offset", &self.prefix_offset)
            .field("read_offset", &self.read_offset)
            .finish_non_exhaustive()
    }
}

/// The byte length of the longest common prefix of `a` and `b` that ends on a char boundary.
fn common_prefix_len(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, ca), cb)| ca != cb)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

impl IncrementalDetokenizer {
    /// A decoder for a sequence continuing `prompt`.
    pub fn new(tokenizer: Arc<Tokenizer>, prompt: &[TokenId], skip_special_tokens: bool) -> Self {
        let context = &prompt[prompt.len().saturating_sub(PROMPT_CONTEXT_TOKENS)..];
        IncrementalDetokenizer {
            tokenizer,
            skip_special_tokens,
            ids: context.to_vec(),
            prefix_offset: 0,
            read_offset: context.len(),
        }
    }

    fn decode(&self, ids: &[TokenId]) -> Result<String, SampleError> {
        self.tokenizer
            .decode(ids, self.skip_special_tokens)
            .map_err(|e| SampleError::Detokenize(e.to_string()))
    }

    /// The text the window gained past `read_offset`, if any.
    fn pending_text(&self) -> Result<(String, usize), SampleError> {
        let prefix_text = self.decode(&self.ids[self.prefix_offset..self.read_offset])?;
        let new_text = self.decode(&self.ids[self.prefix_offset..])?;
        let start = if new_text.starts_with(&prefix_text) {
            prefix_text.len()
        } else {
            common_prefix_len(&new_text, &prefix_text)
        };
        Ok((new_text, start))
    }

    fn advance(&mut self) {
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        self.ids.drain(..self.prefix_offset);
        self.read_offset -= self.prefix_offset;
        self.prefix_offset = 0;
    }

    /// Adds a token and returns the newly completed text (empty while a character is incomplete
    /// or the token decodes to nothing, e.g. a skipped special token).
    pub fn push(&mut self, token: TokenId) -> Result<String, SampleError> {
        self.ids.push(token);
        let (new_text, start) = self.pending_text()?;
        if new_text.len() > start && !new_text.ends_with('\u{FFFD}') {
            self.advance();
            Ok(new_text[start..].to_owned())
        } else {
            Ok(String::new())
        }
    }

    /// Emits whatever is still held back (incomplete characters become U+FFFD, as in a full
    /// lossy decode). Call once, when the sequence ends.
    pub fn flush(&mut self) -> Result<String, SampleError> {
        let (new_text, start) = self.pending_text()?;
        self.advance();
        Ok(new_text.get(start..).unwrap_or_default().to_owned())
    }
}
