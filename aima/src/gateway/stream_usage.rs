//! Token counts for streamed answers. Real engines (vLLM, llama.cpp, SGLang) put usage
//! in a stream only when the request sets `stream_options.include_usage`, so the gateway
//! asks for it on every stream it forwards, and hides the usage event from a client that
//! did not ask, so that client sees the stream it asked for.

use axum::body::Bytes;

/// Largest line held back while looking for the end of an event: past it the filter
/// passes bytes through untouched (an engine's event is a few hundred bytes).
const LINE_KEPT_BYTES: usize = 1 << 20;

/// A streaming request's body with `stream_options.include_usage` set. `None` when the
/// client asked for usage itself (nothing to change or hide) or the body is not an
/// object (the engine answers that).
pub(super) fn ask_for_usage(body: &Bytes) -> Option<Bytes> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    let options = object
        .entry("stream_options")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if options.is_null() {
        *options = serde_json::Value::Object(serde_json::Map::new());
    }
    let options = options.as_object_mut()?;
    if options.get("include_usage") == Some(&serde_json::Value::Bool(true)) {
        return None;
    }
    options.insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

/// Drops the usage-only event (`"choices": []` with a `usage`) from an event stream,
/// line by line, whatever the chunk boundaries. Holds back at most one partial line.
#[derive(Debug, Default)]
pub(super) struct HideUsage {
    partial: Vec<u8>,
    /// The `data:` line just dropped: the blank line that ends its event goes too.
    dropped: bool,
    gave_up: bool,
}

impl HideUsage {
    /// What of `chunk` the client gets now.
    pub(super) fn filter(&mut self, chunk: &[u8]) -> Bytes {
        if self.gave_up {
            return Bytes::copy_from_slice(chunk);
        }
        let mut out = Vec::with_capacity(self.partial.len() + chunk.len());
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line_end, after) = rest.split_at(end + 1);
            rest = after;
            let line = if self.partial.is_empty() {
                line_end.to_vec()
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(line_end);
                line
            };
            self.take_line(line, &mut out);
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > LINE_KEPT_BYTES {
            self.gave_up = true;
            out.append(&mut self.partial);
        }
        Bytes::from(out)
    }

    /// Whatever was held back when the stream ends.
    pub(super) fn finish(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.partial))
    }

    fn take_line(&mut self, line: Vec<u8>, out: &mut Vec<u8>) {
        let blank = line.iter().all(|b| *b == b'\n' || *b == b'\r');
        if std::mem::take(&mut self.dropped) && blank {
            return;
        }
        if is_usage_event(&line) {
            self.dropped = true;
            return;
        }
        out.extend_from_slice(&line);
    }
}

/// A `data:` line carrying only usage: no choices left to give.
fn is_usage_event(line: &[u8]) -> bool {
    let Some(data) = line.strip_prefix(b"data:") else {
        return false;
    };
    if !data.windows(7).any(|w| w == b"\"usage\"") {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data.trim_ascii()) else {
        return false;
    };
    let no_choices = value
        .get("choices")
        .and_then(|c| c.as_array())
        .is_some_and(|c| c.is_empty());
    no_choices && value.get("usage").is_some_and(|u| !u.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM_STREAM: &[u8] = b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"total_tokens\":7,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

    fn filtered(pieces: usize) -> Vec<u8> {
        let mut hide = HideUsage::default();
        let mut out = Vec::new();
        for piece in VLLM_STREAM.chunks(pieces) {
            out.extend_from_slice(&hide.filter(piece));
        }
        out.extend_from_slice(&hide.finish());
        out
    }

    #[test]
    fn the_usage_event_is_hidden_whatever_the_chunk_boundaries() {
        let expected: &[u8] = b"data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"length\"}]}\n\n\
data: [DONE]\n\n";
        for size in [1, 3, 7, 64, VLLM_STREAM.len()] {
            assert_eq!(
                String::from_utf8_lossy(&filtered(size)),
                String::from_utf8_lossy(expected),
                "chunks of {size}"
            );
        }
    }

    #[test]
    fn usage_is_asked_for_unless_the_client_did() {
        let asked = ask_for_usage(&Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"continuous_usage_stats":false}}"#,
        ))
        .expect("rewritten");
        let value: serde_json::Value = serde_json::from_slice(&asked).expect("json");
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["stream_options"]["continuous_usage_stats"], false);
        let null = ask_for_usage(&Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":null}"#,
        ))
        .expect("rewritten");
        assert!(String::from_utf8_lossy(&null).contains(r#""include_usage":true"#));
        assert!(
            ask_for_usage(&Bytes::from_static(
                br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
            ))
            .is_none()
        );
        assert!(ask_for_usage(&Bytes::from_static(b"[1]")).is_none());
    }

    #[test]
    fn a_chunk_with_choices_and_usage_is_kept_and_an_endless_line_passes_through() {
        let mut hide = HideUsage::default();
        let kept = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert_eq!(&hide.filter(kept)[..], &kept[..]);
        let long = vec![b'x'; LINE_KEPT_BYTES + 1];
        assert_eq!(hide.filter(&long).len(), long.len());
        assert_eq!(&hide.filter(b"data: y\n")[..], b"data: y\n");
    }
}
