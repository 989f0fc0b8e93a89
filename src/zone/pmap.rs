//! A persistent hash trie with wide, exactly sized leaves: the snapshot's maps.
//!
//! Items live in sorted leaves of up to [`LEAF_MAX`] items; a leaf that grows past that splits
//! by the next 4 bits of the hash into a branch of 16 children. A map is one `Arc`: cloning it
//! is O(1), and a change copies (only if shared with a published snapshot) the path of branches
//! to one leaf and that leaf — a few hundred bytes, whatever the size of the map. Leaves are
//! boxed slices sized to their items, so a map costs little more than its items (a HAMT with
//! one item per slot costs several times that).
//!
//! The trie is a multiset ordered by hash, then by [`Item::tie`]: every item with a given hash
//! sits in one leaf, next to each other, and [`PMap::find`] returns them as one slice.

use std::cmp::Ordering;
use std::sync::{Arc, OnceLock};

/// What a [`PMap`] holds.
pub trait Item: Clone {
    /// The hash of the item's key: items with equal keys have equal hashes.
    fn hash(&self) -> u64;
    /// The order of items with equal hashes.
    fn tie(&self, other: &Self) -> Ordering;
}

const BITS: u32 = 4;
const FAN: usize = 1 << BITS;
/// Deepest level: a leaf there has used all 64 bits of the hash and cannot split.
const MAX_DEPTH: u32 = 64 / BITS - 1;
/// A leaf splits when it holds more items than this...
const LEAF_MAX: usize = 128;
/// ...and a branch whose leaves hold no more than this together becomes one leaf again.
const MERGE_MAX: usize = LEAF_MAX / 2;

#[derive(Clone)]
enum Node<E> {
    Leaf(Box<[E]>),
    Branch(Box<[Option<Arc<Node<E>>>; FAN]>),
}

/// A persistent multiset of items ordered by hash.
pub struct PMap<E> {
    root: Arc<Node<E>>,
    len: usize,
}

impl<E> Clone for PMap<E> {
    fn clone(&self) -> Self {
        PMap {
            root: self.root.clone(),
            len: self.len,
        }
    }
}

impl<E> Default for PMap<E> {
    fn default() -> Self {
        PMap {
            root: Arc::new(Node::Leaf(Box::new([]))),
            len: 0,
        }
    }
}

impl<E: Item + std::fmt::Debug> std::fmt::Debug for PMap<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[inline]
fn slot(hash: u64, depth: u32) -> usize {
    ((hash >> (64 - BITS * (depth + 1))) as usize) & (FAN - 1)
}

/// Where the items with hash >= `h` start in a sorted leaf at `depth`. The hashes below the
/// leaf's prefix are spread evenly, so `h` itself says about where to look: start there, then
/// gallop to the boundary (a few steps, never more than a binary search's).
#[inline]
fn lower_bound<E: Item>(items: &[E], h: u64, depth: u32) -> usize {
    let n = items.len();
    if n == 0 {
        return 0;
    }
    let below = h << (BITS * depth);
    let g = ((below as u128 * n as u128) >> 64) as usize;
    let (lo, hi) = if items[g].hash() < h {
        // the boundary is right of g
        let mut lo = g + 1;
        let mut step = 1;
        while lo + step <= n && items[lo + step - 1].hash() < h {
            lo += step;
            step *= 2;
        }
        (lo, (lo + step).min(n))
    } else {
        // the boundary is at g or left of it
        let mut hi = g;
        let mut step = 1;
        while hi >= step && items[hi - step].hash() >= h {
            hi -= step;
            step *= 2;
        }
        (hi.saturating_sub(step), hi)
    };
    lo + items[lo..hi].partition_point(|e| e.hash() < h)
}

/// The run of items with hash `h` in a sorted leaf at `depth`.
#[inline]
fn run<E: Item>(items: &[E], h: u64, depth: u32) -> (usize, usize) {
    let start = lower_bound(items, h, depth);
    let len = items[start..].iter().take_while(|e| e.hash() == h).count();
    (start, start + len)
}

impl<E: Item> PMap<E> {
    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every item with hash `h`, in tie order.
    #[inline]
    pub fn find(&self, h: u64) -> &[E] {
        let mut node = &*self.root;
        let mut depth = 0;
        loop {
            match node {
                Node::Branch(children) => match &children[slot(h, depth)] {
                    Some(c) => {
                        node = c;
                        depth += 1;
                    }
                    None => return &[],
                },
                Node::Leaf(items) => {
                    let (a, b) = run(items, h, depth);
                    return &items[a..b];
                }
            }
        }
    }

    /// Add `e` after the items it ties with.
    pub fn insert(&mut self, e: E) {
        let h = e.hash();
        insert_at(&mut self.root, e, h, 0);
        self.len += 1;
    }

    /// Remove the items with hash `h` that `pred` selects; returns how many.
    pub fn remove_where(&mut self, h: u64, pred: impl Fn(&E) -> bool) -> usize {
        self.remove_some(h, pred, usize::MAX)
    }

    /// Remove the first `limit` items with hash `h` that `pred` selects; returns how many.
    pub fn remove_some(&mut self, h: u64, pred: impl Fn(&E) -> bool, limit: usize) -> usize {
        // Look first: a miss copies nothing.
        if limit == 0 || !self.find(h).iter().any(&pred) {
            return 0;
        }
        let n = remove_at(&mut self.root, h, &pred, limit, 0);
        self.len -= n;
        n
    }

    /// Every item, in hash order.
    pub fn iter(&self) -> Iter<'_, E> {
        Iter {
            stack: vec![(&*self.root, 0)],
            leaf: [].iter(),
        }
    }
}

fn insert_at<E: Item>(node: &mut Arc<Node<E>>, e: E, h: u64, depth: u32) {
    let n = Arc::make_mut(node);
    let split = match n {
        Node::Branch(children) => {
            match &mut children[slot(h, depth)] {
                Some(c) => insert_at(c, e, h, depth + 1),
                s @ None => *s = Some(Arc::new(Node::Leaf(Box::new([e])))),
            }
            return;
        }
        Node::Leaf(items) => {
            let (a, b) = run(items, h, depth);
            let pos = a + items[a..b].partition_point(|x| x.tie(&e) != Ordering::Greater);
            let mut v = std::mem::take(items).into_vec();
            v.reserve_exact(1);
            v.insert(pos, e);
            if v.len() > LEAF_MAX && depth < MAX_DEPTH {
                v
            } else {
                *items = v.into_boxed_slice();
                return;
            }
        }
    };
    *n = split_leaf(split, depth);
}

/// A branch at `depth` holding `items` (sorted, all sharing the hash bits above `depth`).
fn split_leaf<E: Item>(items: Vec<E>, depth: u32) -> Node<E> {
    let mut children: Box<[Option<Arc<Node<E>>>; FAN]> = Box::new(std::array::from_fn(|_| None));
    let mut rest = &items[..];
    while let Some(first) = rest.first() {
        let s = slot(first.hash(), depth);
        let n = rest
            .iter()
            .take_while(|e| slot(e.hash(), depth) == s)
            .count();
        let group = &rest[..n];
        rest = &rest[n..];
        let node = if group.len() > LEAF_MAX && depth + 1 < MAX_DEPTH {
            split_leaf(group.to_vec(), depth + 1)
        } else {
            Node::Leaf(group.into())
        };
        children[s] = Some(Arc::new(node));
    }
    Node::Branch(children)
}

fn remove_at<E: Item>(
    node: &mut Arc<Node<E>>,
    h: u64,
    pred: &dyn Fn(&E) -> bool,
    limit: usize,
    depth: u32,
) -> usize {
    let n = Arc::make_mut(node);
    match n {
        Node::Branch(children) => {
            let s = slot(h, depth);
            let Some(c) = &mut children[s] else { return 0 };
            let removed = remove_at(c, h, pred, limit, depth + 1);
            if matches!(&**c, Node::Leaf(items) if items.is_empty()) {
                children[s] = None;
            }
            if let Some(merged) = merge(children) {
                *n = merged;
            }
            removed
        }
        Node::Leaf(items) => {
            let (a, b) = run(items, h, depth);
            let mut v = std::mem::take(items).into_vec();
            let mut kept = a;
            let mut removed = 0;
            for i in a..b {
                if removed < limit && pred(&v[i]) {
                    removed += 1;
                } else {
                    v.swap(kept, i);
                    kept += 1;
                }
            }
            v.drain(kept..b);
            *items = v.into_boxed_slice();
            removed
        }
    }
}

/// A branch of leaves small enough together, as one leaf.
fn merge<E: Item>(children: &[Option<Arc<Node<E>>>; FAN]) -> Option<Node<E>> {
    let mut total = 0;
    for c in children.iter().flatten() {
        match &**c {
            Node::Leaf(items) => total += items.len(),
            Node::Branch(_) => return None,
        }
        if total > MERGE_MAX {
            return None;
        }
    }
    let mut v = Vec::with_capacity(total);
    for c in children.iter().flatten() {
        if let Node::Leaf(items) = &**c {
            v.extend(items.iter().cloned());
        }
    }
    Some(Node::Leaf(v.into_boxed_slice()))
}

/// Iterator over a [`PMap`]'s items.
pub struct Iter<'a, E> {
    stack: Vec<(&'a Node<E>, usize)>,
    leaf: std::slice::Iter<'a, E>,
}

impl<'a, E> Iterator for Iter<'a, E> {
    type Item = &'a E;
    fn next(&mut self) -> Option<&'a E> {
        loop {
            if let Some(e) = self.leaf.next() {
                return Some(e);
            }
            let (node, i) = self.stack.pop()?;
            match node {
                Node::Leaf(items) => self.leaf = items.iter(),
                Node::Branch(children) => {
                    if i + 1 < FAN {
                        self.stack.push((node, i + 1));
                    }
                    if let Some(c) = &children[i] {
                        self.stack.push((c, 0));
                    }
                }
            }
        }
    }
}

/// The process's hash seed: random, so that nobody can pick names that all land in one leaf.
#[inline]
fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64) | 1
    })
}

/// A bijective mix of 64 bits (MurmurHash3's finaliser): distinct keys never collide.
#[inline]
fn fmix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hash of a 64-bit key; distinct keys get distinct hashes.
#[inline]
pub fn hash_u64(x: u64) -> u64 {
    fmix(x ^ seed())
}

/// Hash of a byte string.
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed() ^ (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    let r = chunks.remainder();
    if !r.is_empty() {
        let mut last = [0u8; 8];
        last[..r.len()].copy_from_slice(r);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(last)).wrapping_mul(K);
    }
    fmix(h)
}

/// Hash of 16 bytes (an IPv6 address).
#[inline]
pub fn hash_u128(x: u128) -> u64 {
    fmix(hash_u64(x as u64) ^ (x >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct I(u64, u32);
    impl Item for I {
        fn hash(&self) -> u64 {
            // a poor hash on purpose: many equal prefixes and full collisions
            (self.0 % 1000) << 40
        }
        fn tie(&self, o: &Self) -> Ordering {
            (self.0, self.1).cmp(&(o.0, o.1))
        }
    }

    #[test]
    fn behaves_like_a_sorted_multiset_and_persists() {
        let mut m: PMap<I> = PMap::default();
        let mut model: Vec<I> = Vec::new();
        let mut r = 12345u64;
        let mut next = || {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            r
        };
        let mut old = Vec::new();
        for step in 0..20000 {
            let k = next() % 3000;
            if next() % 3 == 0 {
                let h = (k % 1000) << 40;
                let n = m.remove_where(h, |e| e.0 == k);
                let before = model.len();
                model.retain(|e| e.0 != k);
                assert_eq!(n, before - model.len());
            } else {
                let e = I(k, (next() % 4) as u32);
                m.insert(e.clone());
                model.push(e);
            }
            if step % 1000 == 0 {
                let mut sorted = model.clone();
                sorted.sort_by(|a, b| (a.hash(), a.0, a.1).cmp(&(b.hash(), b.0, b.1)));
                old.push((m.clone(), sorted));
            }
        }
        model.sort_by(|a, b| (a.hash(), a.0, a.1).cmp(&(b.hash(), b.0, b.1)));
        old.push((m.clone(), model));
        for (m, model) in &old {
            assert_eq!(m.len(), model.len());
            let got: Vec<I> = m.iter().cloned().collect();
            assert_eq!(&got, model);
            for k in 0..3000u64 {
                let want: Vec<&I> = model.iter().filter(|e| e.0 == k).collect();
                let found: Vec<&I> = m
                    .find((k % 1000) << 40)
                    .iter()
                    .filter(|e| e.0 == k)
                    .collect();
                assert_eq!(found, want);
            }
        }
    }

    #[test]
    fn hashes_spread() {
        let mut m: std::collections::HashSet<usize> = Default::default();
        for i in 0..4096u64 {
            m.insert(slot(hash_u64(0x0a80_0000 + i), 0) * 16 + slot(hash_u64(0x0a80_0000 + i), 1));
        }
        assert!(m.len() > 250);
        assert_ne!(hash_bytes(b"\x03abc"), hash_bytes(b"\x03abd"));
        assert_ne!(hash_bytes(b"12345678"), hash_bytes(b"12345678\0"));
    }
}
