//! A page of a list response, its items decoded one by one as the body's bytes arrive.
//!
//! kube-client reads a whole list page into memory, copies it into a string and decodes it into
//! one `Vec` before the first object can be used: with pods of 5-10 KB as a real API server
//! sends them (managed fields, statuses), a page of 500 costs several copies of 5 MB at once.
//! [`ListBody`] instead keeps only the bytes not yet used (at most one item that has not fully
//! arrived, and the chunk that brought it) and decodes each element of the top-level `items`
//! array straight from them, with serde, as soon as its last byte is in. The list's other fields
//! (its `metadata`, with the resourceVersion and the continue token) are kept, with `items`
//! emptied, and decoded at the end.
//!
//! Why serde finds where an item ends, rather than a scan of its own ahead of the decoding: the
//! decoder reads every byte of the item anyway, and a separate scan (strings, escapes, nesting)
//! plus a copy of each item cost as much again: a third of a small relist's CPU time, measured
//! (see `benches/README.md`). The price is an item cut by the end of a chunk: its decoding stops
//! at the cut and starts again when more has arrived. To keep that linear however small the
//! chunks, an item that did not fit is tried again only once half as much again has arrived.

use serde::de::{DeserializeOwned, IgnoredAny};

/// See the module doc. Feed it the body with [`Self::push`] (and [`Self::end`]); take the items
/// with [`Self::next_item`]; at the end, [`Self::finish`] gives the list without its items.
#[derive(Debug, Default)]
pub(crate) struct ListBody {
    /// Bytes received and not yet used, from `pos` on.
    buf: Vec<u8>,
    pos: usize,
    /// The body has ended: what is in `buf` is all there is.
    ended: bool,
    /// The body is not JSON (an item that is not a JSON value): nothing more is read.
    broken: bool,
    /// The item at `pos` did not fit in the bytes there; it is tried again once `buf` holds at
    /// least this many from `pos` on.
    need: usize,
    /// Nesting depth of objects and arrays outside the items; inside the list object it is 1,
    /// inside its `items` array 2.
    depth: u32,
    in_string: bool,
    escaped: bool,
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

impl ListBody {
    /// The next bytes of the body.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The body has ended.
    pub(crate) fn end(&mut self) {
        self.ended = true;
    }

    /// The next item, decoded as `T`, once all of its bytes are in; `None` until then (or after
    /// the last item). An item that is JSON but not a `T` comes back as [`Undecodable`] and is
    /// passed over: the items after it are read as usual.
    pub(crate) fn next_item<T: DeserializeOwned>(&mut self) -> Option<Result<T, Undecodable<'_>>> {
        if !self.at_item() {
            return None;
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < self.need && !self.ended {
            return None;
        }
        let mut items = serde_json::Deserializer::from_slice(avail).into_iter::<T>();
        let error = match items.next()? {
            Ok(item) => {
                let end = items.byte_offset();
                return self.took(end).then_some(Ok(item));
            }
            Err(e) if e.is_eof() => {
                self.wait();
                return None;
            }
            Err(e) => e,
        };
        // Not a `T`: where does it end?
        let mut skip = serde_json::Deserializer::from_slice(avail).into_iter::<IgnoredAny>();
        match skip.next()? {
            Ok(_) => {
                let (start, end) = (self.pos, skip.byte_offset());
                self.took(end)
                    .then(|| Err((&self.buf[start..start + end], error)))
            }
            Err(e) if e.is_eof() => {
                self.wait();
                None
            }
            Err(_) => {
                self.broken = true;
                None
            }
        }
    }

    /// An item of `end` bytes was read at `pos`. Unless the body has ended, a byte must follow
    /// it: a number cut by the end of a chunk reads as a shorter number.
    fn took(&mut self, end: usize) -> bool {
        if end >= self.buf.len() - self.pos && !self.ended {
            self.wait();
            return false;
        }
        self.pos += end;
        self.need = 0;
        true
    }

    /// The item at `pos` needs more bytes than there are.
    fn wait(&mut self) {
        let have = self.buf.len() - self.pos;
        self.need = have + (have / 2).max(1);
    }

    /// Reads the list's bytes outside its items up to the next item; true if one starts at `pos`.
    fn at_item(&mut self) -> bool {
        if self.broken {
            return false;
        }
        while let Some(&b) = self.buf.get(self.pos) {
            if self.in_items && self.depth == 2 && !self.in_string {
                match b {
                    b']' => {
                        self.in_items = false;
                        self.depth = 1;
                        self.rest.push(b);
                    }
                    b',' | b' ' | b'\t' | b'\n' | b'\r' => {}
                    _ => return true,
                }
            } else {
                self.byte(b);
            }
            self.pos += 1;
        }
        false
    }

    /// One byte of the list outside its items.
    fn byte(&mut self, b: u8) {
        self.rest.push(b);
        if self.in_string {
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
    pub(crate) fn finish(mut self) -> Option<Vec<u8>> {
        // Whatever follows the last item (the list's closing bytes) is read here.
        if self.at_item() {
            return None;
        }
        (self.depth == 0 && !self.in_string && !self.broken && !self.rest.is_empty())
            .then_some(self.rest)
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
        let mut take = |page: &mut ListBody| {
            while let Some(i) = page.next_item::<T>() {
                items.push(i.map_err(|(b, _)| String::from_utf8(b.to_vec()).unwrap()));
            }
        };
        for c in body.as_bytes().chunks(chunk) {
            page.push(c);
            take(&mut page);
            assert!(
                page.buf.len() - page.pos <= chunk + 512,
                "only an item and a chunk are held"
            );
        }
        page.end();
        take(&mut page);
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
    fn an_item_of_another_shape_is_passed_over() {
        #[derive(serde::Deserialize, Debug)]
        struct Named {
            #[allow(dead_code)]
            name: String,
        }
        let body = r#"{"items":[{"name":"a"},{"name":7,"x":[{"y":"}"}]},12345,{"name":"d"}],"metadata":{}}"#;
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
        let (items, rest) = read::<Value>(r#"{"metadata":{},"items":[{"a":1},{"b":"#, 4);
        assert_eq!(items.len(), 1);
        assert!(rest.is_none(), "a body cut off inside the list");
        let (items, rest) = read::<Value>(r#"{"items":[{"a":1},{"b"x}],"metadata":{}}"#, 3);
        assert_eq!(items.len(), 1);
        assert!(rest.is_none(), "an item that is not JSON");
    }

    #[test]
    fn an_item_cut_into_tiny_chunks_is_decoded_a_bounded_number_of_times() {
        // 1-byte chunks of a 20 KB item: tried again only after half as much again has arrived,
        // so about log1.5(20,000) = 25 tries, not 20,000.
        let big = format!(
            r#"{{"items":[{{"s":"{}"}}],"metadata":{{}}}}"#,
            "x".repeat(20_000)
        );
        let mut page = ListBody::default();
        let (mut tries, mut items) = (0, 0);
        for b in big.as_bytes().chunks(1) {
            page.push(b);
            let before = page.need;
            if page.next_item::<Value>().is_some() {
                items += 1;
            } else if page.need != before {
                tries += 1;
            }
        }
        page.end();
        items += usize::from(page.next_item::<Value>().is_some());
        assert_eq!(items, 1);
        assert!(tries < 40, "{tries} tries");
    }
}
