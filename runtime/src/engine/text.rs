//! Turns a stream of token bytes into text chunks: UTF-8 reassembly across tokens and stop strings.
//!
//! A token may end in the middle of a UTF-8 character, and a stop string may span tokens, so text
//! is held back until it cannot be the start of a stop string. Both engines use this, which keeps
//! the stop semantics identical for the fake and the real engine.

/// Assembles the completion text of one request.
#[derive(Debug, Default)]
pub struct TextAssembler {
    pending_bytes: Vec<u8>,
    /// Decoded text not yet sent (it may still become part of a stop string).
    held: String,
    stop: Vec<String>,
    tokens_held: u32,
}

/// The result of pushing one token.
#[derive(Debug, PartialEq, Eq)]
pub struct Pushed {
    /// Text that can be sent now (may be empty).
    pub text: String,
    /// Tokens covered by `text`.
    pub tokens: u32,
    /// A stop string was found; `text` ends right before it and the generation must end.
    pub stopped: bool,
}

impl TextAssembler {
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.pending_bytes.extend_from_slice(bytes);
        self.tokens_held += 1;
        // Move the valid UTF-8 prefix into `held`; invalid bytes become U+FFFD.
        loop {
            match std::str::from_utf8(&self.pending_bytes) {
                Ok(s) => {
                    self.held.push_str(s);
                    self.pending_bytes.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid by construction.
                    self.held
                        .push_str(&String::from_utf8_lossy(&self.pending_bytes[..valid]));
                    match e.error_len() {
                        None => {
                            self.pending_bytes.drain(..valid);
                            break;
                        }
                        Some(bad) => {
                            self.held.push('\u{FFFD}');
                            self.pending_bytes.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.pending_bytes.clear();
            let tokens = std::mem::take(&mut self.tokens_held);
            return Pushed {
                text,
                tokens,
                stopped: true,
            };
        }
        // Keep the longest suffix of `held` that is a prefix of a stop string.
        let keep = self
            .stop
            .iter()
            .map(|s| longest_suffix_prefix(&self.held, s))
            .max()
            .unwrap_or(0);
        let cut = self.held.len() - keep;
        if cut == 0 {
            return Pushed {
                text: String::new(),
                tokens: 0,
                stopped: false,
            };
        }
        let text = self.held[..cut].to_string();
        self.held.drain(..cut);
        let tokens = if self.held.is_empty() && self.pending_bytes.is_empty() {
            std::mem::take(&mut self.tokens_held)
        } else {
            // Some of the tokens are still held; count them when the rest is released.
            let t = self.tokens_held.saturating_sub(1);
            self.tokens_held -= t;
            t
        };
        Pushed {
            text,
            tokens,
            stopped: false,
        }
    }

    /// Releases what is still held at the end of a generation.
    pub fn finish(&mut self) -> Pushed {
        let mut text = std::mem::take(&mut self.held);
        if !self.pending_bytes.is_empty() {
            text.push_str(&String::from_utf8_lossy(&self.pending_bytes));
            self.pending_bytes.clear();
        }
        Pushed {
            text,
            tokens: std::mem::take(&mut self.tokens_held),
            stopped: false,
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`, on char boundaries.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = stop.len().saturating_sub(1).min(text.len());
    (1..=max)
        .rev()
        .find(|&n| {
            text.is_char_boundary(text.len() - n) && stop.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], tokens: &[&[u8]]) -> (String, bool) {
        let mut a = TextAssembler::new(stop.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for t in tokens {
            let p = a.push(t);
            out.push_str(&p.text);
            if p.stopped {
                return (out, true);
            }
        }
        out.push_str(&a.finish().text);
        (out, false)
    }

    #[test]
    fn passes_text_through() {
        assert_eq!(
            run(&[], &[b"Hello", b" world"]),
            ("Hello world".into(), false)
        );
    }

    #[test]
    fn reassembles_utf8_across_tokens() {
        let e = "é".as_bytes();
        assert_eq!(
            run(&[], &[b"caf", &e[..1], &e[1..]]),
            ("café".into(), false)
        );
    }

    #[test]
    fn stops_across_tokens_and_hides_the_stop_string() {
        assert_eq!(
            run(&["\n\n"], &[b"one", b"\n", b"\ntwo"]),
            ("one".into(), true)
        );
        assert_eq!(
            run(&["END"], &[b"aE", b"N", b"D", b"x"]),
            ("a".into(), true)
        );
        // A partial match that does not complete is released.
        assert_eq!(run(&["END"], &[b"aE", b"N", b"x"]), ("aENx".into(), false));
    }

    #[test]
    fn counts_tokens() {
        let mut a = TextAssembler::new(vec!["XY".into()]);
        let p = a.push(b"aX");
        assert_eq!((p.text.as_str(), p.tokens), ("a", 0));
        let p = a.push(b"b");
        assert_eq!((p.text.as_str(), p.tokens), ("Xb", 2));
    }
}
