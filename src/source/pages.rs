//! A page of a list response, its items decoded one by one as the body's bytes arrive.
//!
//! kube-client reads a whole list page into memory, copies it into a string and decodes it into
//! one `Vec` before the first object can be used: with pods of 5-10 KB as a real API server
//! sends them (managed fields, statuses), a page of 500 costs several copies of 5 MB at once.
//! [`ListBody`] instead decodes each element of the top-level `items` array with serde straight
//! from the chunk of the body it arrived in, and hands it on. Only an item cut by the end of a
//! chunk is copied, until the next chunk completes it: at most one item is ever held. The list's
//! other fields (its `metadata`, with the resourceVersion and the continue token) are kept,
//! with `items` emptied, and decoded at the end.
//!
//! Why serde finds where an item ends, rather than a scan of its own ahead of the decoding: the
//! decoder reads every byte of the item anyway, and a separate scan (strings, escapes, nesting)
//! plus a copy of each item cost as much again: a third of a small relist's CPU time, measured
//! (see `benches/README.md`). Only the one item per chunk that the chunk's end cuts is scanned
//! ([`Cut`]), to find its end in the next chunk.

use serde::de::{DeserializeOwned, IgnoredAny};

/// See the module doc. Feed it the body chunk by chunk with [`Self::feed`]; at the end,
/// [`Self::finish`] gives the list without its items.
#[derive(Debug, Default)]
pub(crate) struct ListBody {
    /// The bytes so far of an item that the end of a chunk cut, and where it stands.
    cut: Option<Cut>,
    /// The body is not JSON (an item that is not a JSON value): nothing more is read.
    broken: bool,
    /// Nesting depth of objects and arrays outside the items; inside the list object it is 1,
    /// inside its `items` array 2.
    depth: u32,
    string: JsonString,
    /// The string being read at depth 1 (a key or a value of the list object), while short.
    key: Vec<u8>,
    /// The last string at depth 1 was `"items"`.
    last_string_is_items: bool,
    /// ... and its `:` followed: an array now is the items.
    items_value_next: bool,
    /// Inside the `items` array, between its elements.
    in_items: bool,
    /// The list's bytes outside its items.
    rest: Vec<u8>,
}

/// An element of `items` that is JSON but not the type asked for: its bytes and the error.
pub(crate) type Undecodable<'a> = (&'a [u8], serde_json::Error);

/// What decoding an item from the start of some bytes came to.
enum Decoded {
    /// An item (or an element that is not one) of this many bytes, handed on.
    Item(usize),
    /// The bytes end before the item does.
    Cut,
    /// Not JSON.
    Broken,
}

/// An item cut by the end of a chunk: its bytes so far, and a scan of them (strings, escapes,
/// nesting) that tells where in the next chunks it ends.
#[derive(Debug, Default)]
struct Cut {
    bytes: Vec<u8>,
    depth: u32,
    string: JsonString,
    /// Past the first byte.
    started: bool,
    /// The item is a string, a number or a literal: it ends with its closing quote or before
    /// the first byte that cannot be part of it.
    scalar: bool,
    /// The item's last byte has been seen.
    complete: bool,
}

/// Where the bytes read stand with respect to a JSON string.
#[derive(Debug, Default, Clone, Copy)]
struct JsonString {
    /// Inside a string.
    open: bool,
    /// ... right after a backslash.
    escaped: bool,
}

impl JsonString {
    /// Reads a byte inside the string; true if it is the closing quote.
    fn closes(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.open = false;
            return true;
        }
        false
    }
}

impl Cut {
    /// Reads on; the number of bytes of `more` that belong to the item once it is complete.
    fn scan(&mut self, more: &[u8]) -> Option<usize> {
        for (i, &b) in more.iter().enumerate() {
            if self.complete {
                return Some(i);
            }
            if !self.started {
                self.started = true;
                match b {
                    b'{' | b'[' => self.depth = 1,
                    b'"' => (self.scalar, self.string.open) = (true, true),
                    _ => self.scalar = true,
                }
                continue;
            }
            if self.string.open {
                if self.string.closes(b) {
                    self.complete = self.scalar;
                }
                continue;
            }
            if self.scalar {
                // A number or a literal ends before a delimiter.
                if matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                    self.complete = true;
                    return Some(i);
                }
                continue;
            }
            match b {
                b'"' => self.string.open = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.complete = self.depth == 0;
                }
                _ => {}
            }
        }
        self.complete.then_some(more.len())
    }
}

impl ListBody {
    /// The next chunk of the body (an empty one at its end): every item it completes is decoded
    /// as `T` and handed to `each`, in order. An element of `items` that is JSON but not a `T` is handed on as
    /// [`Undecodable`], and the items after it are read as usual.
    pub(crate) fn feed<T: DeserializeOwned>(
        &mut self,
        chunk: &[u8],
        mut each: impl FnMut(Result<T, Undecodable<'_>>),
    ) {
        if self.broken {
            return;
        }
        let mut at = 0;
        if let Some(mut cut) = self.cut.take() {
            let Some(end) = cut.scan(chunk) else {
                cut.bytes.extend_from_slice(chunk);
                self.cut = Some(cut);
                return;
            };
            cut.bytes.extend_from_slice(&chunk[..end]);
            // Complete by the scan: whatever it is, it ends where the bytes do.
            match decode(&cut.bytes, true, &mut each) {
                Decoded::Item(_) => {}
                Decoded::Cut | Decoded::Broken => {
                    self.broken = true;
                    return;
                }
            }
            at = end;
        }
        while let Some(start) = self.next_item_start(chunk, at) {
            match decode(&chunk[start..], false, &mut each) {
                Decoded::Item(len) => at = start + len,
                Decoded::Cut => {
                    let mut cut = Cut::default();
                    let _ = cut.scan(&chunk[start..]);
                    cut.bytes = chunk[start..].to_vec();
                    self.cut = Some(cut);
                    return;
                }
                Decoded::Broken => {
                    self.broken = true;
                    return;
                }
            }
        }
    }

    /// Reads the list's bytes outside its items from `at` on; where the next item starts, if
    /// one does in `chunk`.
    fn next_item_start(&mut self, chunk: &[u8], mut at: usize) -> Option<usize> {
        while let Some(&b) = chunk.get(at) {
            if self.in_items && self.depth == 2 {
                match b {
                    b']' => {
                        self.in_items = false;
                        self.depth = 1;
                        self.rest.push(b);
                    }
                    b',' | b' ' | b'\t' | b'\n' | b'\r' => {}
                    _ => return Some(at),
                }
            } else {
                self.byte(b);
            }
            at += 1;
        }
        None
    }

    /// One byte of the list outside its items.
    fn byte(&mut self, b: u8) {
        self.rest.push(b);
        if self.string.open {
            if self.depth == 1 && self.key.len() <= 6 {
                self.key.push(b);
            }
            if self.string.closes(b) && self.depth == 1 {
                self.last_string_is_items = self.key == b"items\"";
            }
            return;
        }
        match b {
            b'"' => {
                self.string.open = true;
                self.key.clear();
            }
            b'{' | b'[' => {
                if self.depth == 1 && b == b'[' && self.items_value_next {
                    self.in_items = true;
                }
                self.depth += 1;
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            _ => {}
        }
        if self.depth == 1 && !b.is_ascii_whitespace() {
            self.items_value_next = b == b':' && self.last_string_is_items;
        }
    }

    /// The list without its items (`"items":[]`), once the body has ended; `None` if the body
    /// ended inside the list or is not JSON.
    pub(crate) fn finish(self) -> Option<Vec<u8>> {
        (self.depth == 0
            && !self.string.open
            && !self.broken
            && self.cut.is_none()
            && !self.rest.is_empty())
        .then_some(self.rest)
    }
}

/// Decodes the item `bytes` start with and hands it to `each`. Unless `complete` (the bytes are
/// the whole item), a byte must follow it: a number cut by the end of a chunk reads as a shorter
/// number.
fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    complete: bool,
    each: &mut impl FnMut(Result<T, Undecodable<'_>>),
) -> Decoded {
    let whole = |end: usize| complete || end < bytes.len();
    let mut items = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    let error = match items.next() {
        Some(Ok(item)) => {
            let end = items.byte_offset();
            if !whole(end) {
                return Decoded::Cut;
            }
            each(Ok(item));
            return Decoded::Item(end);
        }
        Some(Err(e)) if e.is_eof() => return Decoded::Cut,
        Some(Err(e)) => e,
        None => return Decoded::Cut,
    };
    // Not a `T`: where does it end?
    let mut skip = serde_json::Deserializer::from_slice(bytes).into_iter::<IgnoredAny>();
    match skip.next() {
        Some(Ok(_)) => {
            let end = skip.byte_offset();
            if !whole(end) {
                return Decoded::Cut;
            }
            each(Err((&bytes[..end], error)));
            Decoded::Item(end)
        }
        Some(Err(e)) if e.is_eof() => Decoded::Cut,
        None => Decoded::Cut,
        Some(Err(_)) => Decoded::Broken,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Items (`Ok` decoded as `T`, `Err` the bytes of one that is not) and the list without them.
    fn read<T: DeserializeOwned>(
        body: &str,
        chunk: usize,
    ) -> (Vec<Result<T, String>>, Option<String>) {
        let mut page = ListBody::default();
        let mut items = Vec::new();
        // The end of the body comes as an empty chunk, as from `fill_buf`.
        for c in body.as_bytes().chunks(chunk).chain([&[][..]]) {
            page.feed::<T>(c, |i| {
                items.push(i.map_err(|(b, _)| String::from_utf8(b.to_vec()).unwrap()))
            });
            let held = page.cut.as_ref().map_or(0, |c| c.bytes.len());
            assert!(held <= 512, "only an item is held: {held} bytes");
        }
        (items, page.finish().map(|r| String::from_utf8(r).unwrap()))
    }

    #[test]
    fn items_come_out_one_by_one_at_any_chunk_size() {
        let body = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"a]b}\"c"},
            "items":[{"metadata":{"name":"a","annotations":{"x":"{[\"items\":[}"}},"status":{"podIPs":[{"ip":"10.0.0.1"}]}} ,
            {"metadata":{"name":"b\\"}} ],"extra":{"items":[1,2]}}"#;
        for chunk in [1, 2, 3, 7, 64, body.len()] {
            let (items, rest) = read::<Value>(body, chunk);
            assert_eq!(items.len(), 2, "chunk {chunk}: {items:?}");
            let a = items[0].as_ref().unwrap();
            assert_eq!(a["metadata"]["annotations"]["x"], "{[\"items\":[}");
            assert_eq!(a["status"]["podIPs"][0]["ip"], "10.0.0.1");
            assert_eq!(items[1].as_ref().unwrap()["metadata"]["name"], "b\\");
            let rest: Value = serde_json::from_str(&rest.unwrap()).unwrap();
            assert_eq!(rest["items"], serde_json::json!([]));
            assert_eq!(rest["metadata"]["continue"], "a]b}\"c");
            assert_eq!(rest["extra"]["items"], serde_json::json!([1, 2]));
        }
    }

    #[test]
    fn an_element_of_another_shape_is_passed_over() {
        #[derive(serde::Deserialize, Debug)]
        struct Named {
            #[allow(dead_code)]
            name: String,
        }
        let body = r#"{"items":[{"name":"a"},{"name":7,"x":[{"y":"}"}]},12345,"s\"]",true,{"name":"d"}],"metadata":{}}"#;
        for chunk in [1, 2, 5, 16, body.len()] {
            let (items, rest) = read::<Named>(body, chunk);
            let shapes: Vec<_> = items
                .iter()
                .map(|i| i.as_ref().map(|n| n.name.clone()).map_err(String::clone))
                .collect();
            assert_eq!(
                shapes,
                [
                    Ok("a".to_string()),
                    Err(r#"{"name":7,"x":[{"y":"}"}]}"#.to_string()),
                    Err("12345".to_string()),
                    Err(r#""s\"]""#.to_string()),
                    Err("true".to_string()),
                    Ok("d".to_string()),
                ],
                "chunk {chunk}"
            );
            assert!(rest.is_some(), "chunk {chunk}");
        }
    }

    #[test]
    fn empty_null_cut_off_and_broken_lists() {
        let (items, rest) = read::<Value>(r#"{"metadata":{"resourceVersion":"1"},"items":[]}"#, 5);
        assert!(items.is_empty());
        assert!(rest.unwrap().contains(r#""items":[]"#));
        let (items, rest) = read::<Value>(r#"{"items":null,"metadata":{}}"#, 5);
        assert!(items.is_empty());
        serde_json::from_str::<Value>(&rest.unwrap()).unwrap();
        for chunk in [1, 4, 100] {
            let (items, rest) = read::<Value>(r#"{"metadata":{},"items":[{"a":1},{"b":"#, chunk);
            assert_eq!(items.len(), 1);
            assert!(rest.is_none(), "a body cut off inside an item");
            let (items, rest) = read::<Value>(r#"{"metadata":{},"items":[{"a":1}"#, chunk);
            assert_eq!(items.len(), 1);
            assert!(rest.is_none(), "a body cut off inside the items");
            let (items, rest) = read::<Value>(r#"{"items":[{"a":1},{"b"x}],"metadata":{}}"#, chunk);
            assert_eq!(items.len(), 1);
            assert!(rest.is_none(), "an item that is not JSON");
        }
    }

    #[test]
    fn a_large_item_in_small_chunks_is_decoded_once_and_held_alone() {
        let big = format!(
            r#"{{"items":[{{"s":"{}"}},{{"t":1}}],"metadata":{{}}}}"#,
            "x".repeat(20_000)
        );
        for chunk in [1, 100, 4096] {
            let mut page = ListBody::default();
            let mut items = Vec::new();
            for c in big.as_bytes().chunks(chunk) {
                page.feed::<Value>(c, |i| items.push(i.unwrap()));
                assert!(page.cut.as_ref().is_none_or(|c| c.bytes.len() <= 20_010));
            }
            assert_eq!(items.len(), 2, "chunk {chunk}");
            assert_eq!(items[0]["s"].as_str().unwrap().len(), 20_000);
            assert_eq!(items[1]["t"], 1);
            assert!(page.finish().is_some());
        }
    }
}
