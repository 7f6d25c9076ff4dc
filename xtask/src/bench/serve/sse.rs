//! An incremental parser of the server-sent events of an OpenAI-compatible streaming
//! completion, read the way vLLM's benchmark client reads them: line by line, blank lines,
//! comments and non-`data` fields skipped, the `data:` prefix removed, `[DONE]` ending the
//! stream. Each payload is one line of JSON: a chunk with choices (a token arrival), a
//! usage-only chunk, or an error object.

use serde::Deserialize;

/// One event of the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum SseEvent {
    /// A JSON chunk. `text` is `Some` when the chunk carries at least one choice (the text of
    /// the first, possibly empty); `completion_tokens` is the `usage` figure when present.
    Chunk {
        /// Text of `choices[0]`, when there is a choice.
        text: Option<String>,
        /// `usage.completion_tokens`, when the chunk has a usage object.
        completion_tokens: Option<usize>,
    },
    /// The server reported an error inside the stream (an `{"error": …}` payload).
    Error(String),
    /// `data: [DONE]`: the stream is over.
    Done,
}

/// A payload that is neither `[DONE]` nor a JSON object.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed stream payload {payload:?}: {reason}")]
pub struct SseError {
    /// The payload (truncated to 200 characters).
    pub payload: String,
    /// Why it could not be read.
    pub reason: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    choices: Vec<ChoicePayload>,
    usage: Option<UsagePayload>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChoicePayload {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct UsagePayload {
    completion_tokens: usize,
}

/// Turns byte chunks of any size into events. Invariant: the events do not depend on where the
/// byte stream was cut, and nothing is reported after [`SseEvent::Done`].
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    done: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds the next bytes and returns the events of every line they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(newline) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=newline).collect();
            self.line(&line, &mut events)?;
        }
        Ok(events)
    }

    /// Ends the stream: a last line without a newline is parsed too.
    pub fn finish(&mut self) -> Result<Vec<SseEvent>, SseError> {
        let line = std::mem::take(&mut self.pending);
        let mut events = Vec::new();
        self.line(&line, &mut events)?;
        Ok(events)
    }

    fn line(&mut self, raw: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.done {
            return Ok(());
        }
        let line = String::from_utf8_lossy(raw);
        let Some(data) = line.trim().strip_prefix("data:") else {
            return Ok(()); // Blank line, comment, or another field (event:, id:, retry:).
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            self.done = true;
            events.push(SseEvent::Done);
            return Ok(());
        }
        let payload: Payload = serde_json::from_str(data).map_err(|error| SseError {
            payload: data.chars().take(200).collect(),
            reason: error.to_string(),
        })?;
        if let Some(error) = payload.error {
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .map_or_else(|| error.to_string(), str::to_string);
            events.push(SseEvent::Error(message));
            return Ok(());
        }
        events.push(SseEvent::Chunk {
            text: payload
                .choices
                .first()
                .map(|choice| choice.text.clone().unwrap_or_default()),
            completion_tokens: payload.usage.map(|usage| usage.completion_tokens),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const STREAM: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"He\",\"finish_reason\":null}],\"usage\":null}\n\n\
        : keep-alive comment\n\n\
        data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"\",\"finish_reason\":null}]}\r\n\r\n\
        event: message\n\
        data:{\"id\":\"c\",\"choices\":[{\"index\":0,\"text\":\"llo\",\"finish_reason\":\"length\"}]}\n\n\
        data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n\
        data: [DONE]\n\n\
        data: {\"choices\":[{\"text\":\"after done\"}]}\n\n";

    fn chunk(text: Option<&str>, completion_tokens: Option<usize>) -> SseEvent {
        SseEvent::Chunk {
            text: text.map(str::to_string),
            completion_tokens,
        }
    }

    fn expected() -> Vec<SseEvent> {
        vec![
            chunk(Some("He"), None),
            chunk(Some(""), None),
            chunk(Some("llo"), None),
            chunk(None, Some(3)),
            SseEvent::Done,
        ]
    }

    fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
            let cut = cut.clamp(start, stream.len());
            events.extend(parser.push(&stream[start..cut]).unwrap());
            start = cut;
        }
        events.extend(parser.finish().unwrap());
        events
    }

    #[test]
    fn reads_choices_empty_text_usage_only_chunk_and_done() {
        assert_eq!(parse_in_pieces(STREAM.as_bytes(), &[]), expected());
    }

    #[test]
    fn a_last_line_without_newline_is_read_at_finish() {
        let mut parser = SseParser::new();
        assert_eq!(
            parser
                .push(b"data: {\"choices\":[{\"text\":\"x\"}]}")
                .unwrap(),
            []
        );
        assert_eq!(parser.finish().unwrap(), [chunk(Some("x"), None)]);
    }

    #[test]
    fn error_payloads_and_garbage_are_reported() {
        let mut parser = SseParser::new();
        let events = parser
            .push(b"data: {\"error\":{\"message\":\"engine died\",\"code\":500}}\n")
            .unwrap();
        assert_eq!(events, [SseEvent::Error("engine died".into())]);
        let error = parser.push(b"data: {not json\n").unwrap_err();
        assert_eq!(error.payload, "{not json");
    }

    proptest! {
        /// Cutting the byte stream anywhere (even inside a UTF-8 character) changes nothing.
        #[test]
        fn events_do_not_depend_on_where_the_stream_is_cut(
            mut cuts in proptest::collection::vec(0usize..STREAM.len() + 8, 0..12),
        ) {
            cuts.sort_unstable();
            let stream = STREAM.replace("He", "Hé");
            let mut want = expected();
            want[0] = chunk(Some("Hé"), None);
            prop_assert_eq!(parse_in_pieces(stream.as_bytes(), &cuts), want);
        }
    }
}
