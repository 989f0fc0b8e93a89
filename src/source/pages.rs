//! A page of a list response, split into its items as its bytes arrive.
//!
//! kube-client reads a whole list page into memory, copies it into a string and decodes it into
//! one `Vec` before the first object can be used: with pods of 5-10 KB as a real API server
//! sends them (managed fields, statuses), a page of 500 costs several copies of 5 MB at once.
//! [`ItemSplitter`] instead follows the JSON as it streams in (strings, escapes and nesting
//! only, no parsing) and hands on each element of the top-level `items` array as soon as its last
//! byte has arrived; only that item's bytes are held. The list's other fields (its `metadata`,
//! with the resourceVersion and the continue token) are kept, with `items` emptied, and decoded
//! at the end.

use std::collections::VecDeque;

/// See the module doc. Feed it the body with [`Self::push`]; take the items with
/// [`Self::next_item`]; at the end, [`Self::finish`] gives the list without its items.
#[derive(Debug, Default)]
pub(crate) struct ItemSplitter {
    /// Nesting depth of objects and arrays; inside the list object it is 1, inside its `items`
    /// array 2.
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// The string being read at depth 1 (a key or a value of the list object), while short.
    key: Vec<u8>,
    /// The last string at depth 1 was `"items"`.
    last_string_is_items: bool,
    /// ... and its `:` followed: an array now is the items.
    items_value_next: bool,
    /// Inside the `items` array.
    in_items: bool,
    /// Reading an item (an element of `items`).
    collecting: bool,
    /// The bytes of the item being read.
    item: Vec<u8>,
    /// Items complete but not yet taken.
    done: VecDeque<Vec<u8>>,
    /// Buffers of items taken and given back, for the next items.
    spare: Vec<Vec<u8>>,
    /// The list's bytes outside its items.
    rest: Vec<u8>,
}

impl ItemSplitter {
    /// The next bytes of the body.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) {
        while let Some(&b) = bytes.first() {
            if self.collecting && !self.escaped {
                // Inside an item (nearly all of a page), only quotes, backslashes (in strings)
                // and brackets (outside) matter: the runs between them are copied whole.
                let stop = if self.in_string {
                    bytes.iter().position(|&b| b == b'"' || b == b'\\')
                } else {
                    bytes
                        .iter()
                        .position(|&b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']'))
                };
                let run = stop.unwrap_or(bytes.len());
                self.item.extend_from_slice(&bytes[..run]);
                bytes = &bytes[run..];
                let Some(&b) = bytes.first() else { break };
                self.byte(b);
            } else {
                self.byte(b);
            }
            bytes = &bytes[1..];
        }
    }

    /// Keeps a byte where it belongs: the item being read, the list, or nowhere (the commas
    /// and blanks between items).
    fn keep(&mut self, b: u8) {
        if self.collecting {
            self.item.push(b);
        } else if !(self.in_items && self.depth == 2) {
            self.rest.push(b);
        }
    }

    fn byte(&mut self, b: u8) {
        if self.in_string {
            self.keep(b);
            if self.depth == 1 && self.key.len() <= 6 {
                self.key.push(b);
            }
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 1 {
                    self.last_string_is_items = self.key == b"items\"";
                }
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.key.clear();
                self.keep(b);
            }
            b'{' | b'[' => {
                if self.depth == 1 && b == b'[' && self.items_value_next {
                    self.in_items = true;
                    self.rest.push(b);
                    self.depth += 1;
                    self.items_value_next = false;
                    return;
                }
                if self.in_items && self.depth == 2 {
                    self.collecting = true;
                    if let Some(buf) = self.spare.pop() {
                        self.item = buf;
                    }
                }
                self.depth += 1;
                self.keep(b);
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.in_items && self.depth == 1 {
                    // The end of the items.
                    self.in_items = false;
                    self.rest.push(b);
                    return;
                }
                self.keep(b);
                if self.collecting && self.depth == 2 {
                    self.collecting = false;
                    self.done.push_back(std::mem::take(&mut self.item));
                }
            }
            _ => self.keep(b),
        }
        if self.depth == 1 && !b.is_ascii_whitespace() {
            self.items_value_next = b == b':' && self.last_string_is_items;
        }
    }

    /// The next complete item's bytes.
    pub(crate) fn next_item(&mut self) -> Option<Vec<u8>> {
        self.done.pop_front()
    }

    /// Gives an item's buffer back, to hold a later item without growing a new one.
    pub(crate) fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.spare.len() < 4 {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// The list without its items (`"items":[]`), once the body has ended; `None` if the body
    /// ended inside the list.
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        (self.depth == 0 && !self.in_string && !self.collecting && !self.rest.is_empty())
            .then_some(self.rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(body: &str, chunk: usize) -> (Vec<String>, Option<String>) {
        let mut s = ItemSplitter::default();
        let mut items = Vec::new();
        for c in body.as_bytes().chunks(chunk) {
            s.push(c);
            while let Some(i) = s.next_item() {
                items.push(String::from_utf8(i).unwrap());
            }
        }
        (items, s.finish().map(|r| String::from_utf8(r).unwrap()))
    }

    #[test]
    fn items_come_out_one_by_one_at_any_chunk_size() {
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"a]b}\"c"},
            "items":[{"metadata":{"name":"a","annotations":{"x":"{[\"items\":[}"}},"status":{"podIPs":[{"ip":"10.0.0.1"}]}} ,
            {"metadata":{"name":"b\\"}} ],"extra":{"items":[1,2]}}"#;
        for chunk in [1, 2, 3, 7, 64, body.len()] {
            let (items, rest) = split(body, chunk);
            assert_eq!(items.len(), 2, "chunk {chunk}: {items:?}");
            let a: serde_json::Value = serde_json::from_str(&items[0]).unwrap();
            assert_eq!(a["metadata"]["annotations"]["x"], "{[\"items\":[}");
            assert_eq!(a["status"]["podIPs"][0]["ip"], "10.0.0.1");
            let b: serde_json::Value = serde_json::from_str(&items[1]).unwrap();
            assert_eq!(b["metadata"]["name"], "b\\");
            let rest: serde_json::Value = serde_json::from_str(&rest.unwrap()).unwrap();
            assert_eq!(rest["items"], serde_json::json!([]));
            assert_eq!(rest["metadata"]["continue"], "a]b}\"c");
            assert_eq!(rest["extra"]["items"], serde_json::json!([1, 2]));
        }
    }

    #[test]
    fn empty_null_and_cut_off_lists() {
        let (items, rest) = split(r#"{"metadata":{"resourceVersion":"1"},"items":[]}"#, 5);
        assert!(items.is_empty());
        assert!(rest.unwrap().contains(r#""items":[]"#));
        let (items, rest) = split(r#"{"items":null,"metadata":{}}"#, 5);
        assert!(items.is_empty());
        serde_json::from_str::<serde_json::Value>(&rest.unwrap()).unwrap();
        let (items, rest) = split(r#"{"metadata":{},"items":[{"a":1},{"b":"#, 4);
        assert_eq!(items, [r#"{"a":1}"#]);
        assert!(rest.is_none(), "a body cut off inside the list");
    }
}
