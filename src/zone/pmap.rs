//! A persistent hash trie with wide, exactly sized leaves: the snapshot's maps.
//!
//! Items live in sorted leaves of up to [`LEAF_MAX`] items; a leaf that grows past that splits
//! by the next 4 bits of the hash into a branch of 16 children. A map is one pointer: cloning
//! it is O(1), and a change copies (only if shared with a published snapshot) the path of
//! branches to one leaf and that leaf — a few hundred bytes, whatever the size of the map.
//! Leaves are slices sized to their items, so a map costs little more than its items (a HAMT
//! with one item per slot costs several times that). A child slot holds its kind and its
//! pointer, so a lookup makes one memory hop per level.
//!
//! The trie is a multiset ordered by hash, then by [`Item::tie`]: every item with a given hash
//! sits in one leaf, next to each other, and [`PMap::find`] returns them as one slice.

use std::cmp::Ordering;
use std::mem::ManuallyDrop;
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

enum Child<E> {
    Empty,
    Leaf(Arc<[E]>),
    Branch(Arc<[Child<E>; FAN]>),
}

impl<E> Clone for Child<E> {
    fn clone(&self) -> Self {
        match self {
            Child::Empty => Child::Empty,
            Child::Leaf(l) => Child::Leaf(l.clone()),
            Child::Branch(b) => Child::Branch(b.clone()),
        }
    }
}

/// A persistent multiset of items ordered by hash.
pub struct PMap<E> {
    root: Child<E>,
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
            root: Child::Empty,
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
#[inline(always)]
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
#[inline(always)]
fn run<E: Item>(items: &[E], h: u64, depth: u32) -> (usize, usize) {
    let start = lower_bound(items, h, depth);
    let len = items[start..].iter().take_while(|e| e.hash() == h).count();
    (start, start + len)
}

/// A leaf's items as a vector with room for `extra` more: moved out if the leaf is not shared
/// (no copy of an item, no reference count touched), cloned if it is.
fn into_vec<E: Clone>(mut leaf: Arc<[E]>, extra: usize) -> Vec<E> {
    let mut v = Vec::with_capacity(leaf.len() + extra);
    if Arc::get_mut(&mut leaf).is_some() {
        let n = leaf.len();
        let raw: *const [E] = Arc::into_raw(leaf);
        // SAFETY: this is the only reference to the leaf (`get_mut` succeeded on an owned
        // `Arc`), so its items can be moved out; the allocation is then released as slice of
        // `ManuallyDrop<E>` (same layout), which frees it without dropping the moved items.
        unsafe {
            std::ptr::copy_nonoverlapping(raw as *const E, v.as_mut_ptr(), n);
            v.set_len(n);
            drop(Arc::from_raw(raw as *const [ManuallyDrop<E>]));
        }
    } else {
        v.extend(leaf.iter().cloned());
    }
    v
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
        let mut c = &self.root;
        let mut depth = 0;
        loop {
            match c {
                Child::Branch(b) => {
                    c = &b[slot(h, depth)];
                    depth += 1;
                }
                Child::Leaf(items) => {
                    let (a, b) = run(items, h, depth);
                    return &items[a..b];
                }
                Child::Empty => return &[],
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

    /// Where `self` (older) and `new` differ: `f(old_items, new_items)` for each part of the
    /// trie the two do not share, with the items of that part of each map, in hash-then-tie
    /// order (a part either side lacks gives an empty slice). Parts shared between the two
    /// (the same allocation: untouched since one was cloned from the other) are skipped, so
    /// the cost follows the changes, not the size of the maps.
    pub fn diff<'a>(&'a self, new: &'a Self, f: &mut dyn FnMut(&[&'a E], &[&'a E])) {
        diff_at(&self.root, &new.root, f);
    }

    /// Every item, in hash order.
    pub fn iter(&self) -> Iter<'_, E> {
        let (stack, leaf): (Vec<(&[Child<E>; FAN], usize)>, &[E]) = match &self.root {
            Child::Empty => (Vec::new(), &[]),
            Child::Leaf(l) => (Vec::new(), l),
            Child::Branch(b) => (vec![(&**b, 0)], &[]),
        };
        Iter {
            stack,
            leaf: leaf.iter(),
        }
    }
}

fn diff_at<'a, E>(a: &'a Child<E>, b: &'a Child<E>, f: &mut dyn FnMut(&[&'a E], &[&'a E])) {
    match (a, b) {
        (Child::Empty, Child::Empty) => {}
        (Child::Leaf(x), Child::Leaf(y)) if Arc::ptr_eq(x, y) => {}
        (Child::Branch(x), Child::Branch(y)) if Arc::ptr_eq(x, y) => {}
        (Child::Branch(x), Child::Branch(y)) => {
            for (cx, cy) in x.iter().zip(y.iter()) {
                diff_at(cx, cy, f);
            }
        }
        _ => {
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            collect(a, &mut xs);
            collect(b, &mut ys);
            f(&xs, &ys);
        }
    }
}

/// The items under `c`, in order.
fn collect<'a, E>(c: &'a Child<E>, out: &mut Vec<&'a E>) {
    match c {
        Child::Empty => {}
        Child::Leaf(items) => out.extend(items.iter()),
        Child::Branch(b) => b.iter().for_each(|c| collect(c, out)),
    }
}

fn insert_at<E: Item>(c: &mut Child<E>, e: E, h: u64, depth: u32) {
    *c = match std::mem::replace(c, Child::Empty) {
        Child::Empty => Child::Leaf(Arc::from(vec![e])),
        Child::Branch(mut b) => {
            insert_at(&mut Arc::make_mut(&mut b)[slot(h, depth)], e, h, depth + 1);
            Child::Branch(b)
        }
        Child::Leaf(items) => {
            let (a, b) = run(&items, h, depth);
            let pos = a + items[a..b].partition_point(|x| x.tie(&e) != Ordering::Greater);
            let mut v = into_vec(items, 1);
            v.insert(pos, e);
            if v.len() > LEAF_MAX && depth < MAX_DEPTH {
                split(v, depth)
            } else {
                Child::Leaf(Arc::from(v))
            }
        }
    };
}

/// The child at `depth` holding `items` (sorted, all sharing the hash bits above `depth`).
fn split<E: Item>(items: Vec<E>, depth: u32) -> Child<E> {
    let mut children: [Child<E>; FAN] = std::array::from_fn(|_| Child::Empty);
    let mut counts = [0usize; FAN];
    for e in &items {
        counts[slot(e.hash(), depth)] += 1;
    }
    let mut it = items.into_iter();
    for (s, &n) in counts.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let group: Vec<E> = it.by_ref().take(n).collect();
        children[s] = if n > LEAF_MAX && depth + 1 < MAX_DEPTH {
            split(group, depth + 1)
        } else {
            Child::Leaf(Arc::from(group))
        };
    }
    Child::Branch(Arc::new(children))
}

fn remove_at<E: Item>(
    c: &mut Child<E>,
    h: u64,
    pred: &dyn Fn(&E) -> bool,
    limit: usize,
    depth: u32,
) -> usize {
    let (removed, new) = match std::mem::replace(c, Child::Empty) {
        Child::Empty => (0, Child::Empty),
        Child::Branch(mut b) => {
            let children = Arc::make_mut(&mut b);
            let removed = remove_at(&mut children[slot(h, depth)], h, pred, limit, depth + 1);
            match merge(children) {
                Some(m) => (removed, m),
                None => (removed, Child::Branch(b)),
            }
        }
        Child::Leaf(items) => {
            let (a, b) = run(&items, h, depth);
            if !items[a..b].iter().any(pred) {
                (0, Child::Leaf(items))
            } else {
                let mut v = into_vec(items, 0);
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
                (
                    removed,
                    if v.is_empty() {
                        Child::Empty
                    } else {
                        Child::Leaf(Arc::from(v))
                    },
                )
            }
        }
    };
    *c = new;
    removed
}

/// A branch of leaves small enough together, as one leaf (or nothing).
fn merge<E: Item>(children: &[Child<E>; FAN]) -> Option<Child<E>> {
    let mut total = 0;
    for c in children {
        match c {
            Child::Empty => {}
            Child::Leaf(items) => total += items.len(),
            Child::Branch(_) => return None,
        }
        if total > MERGE_MAX {
            return None;
        }
    }
    if total == 0 {
        return Some(Child::Empty);
    }
    let mut v = Vec::with_capacity(total);
    for c in children {
        if let Child::Leaf(items) = c {
            v.extend(items.iter().cloned());
        }
    }
    Some(Child::Leaf(Arc::from(v)))
}

/// Iterator over a [`PMap`]'s items.
pub struct Iter<'a, E> {
    stack: Vec<(&'a [Child<E>; FAN], usize)>,
    leaf: std::slice::Iter<'a, E>,
}

impl<'a, E> Iterator for Iter<'a, E> {
    type Item = &'a E;
    fn next(&mut self) -> Option<&'a E> {
        loop {
            if let Some(e) = self.leaf.next() {
                return Some(e);
            }
            let (children, i) = self.stack.pop()?;
            if i + 1 < FAN {
                self.stack.push((children, i + 1));
            }
            match &children[i] {
                Child::Empty => {}
                Child::Leaf(items) => self.leaf = items.iter(),
                Child::Branch(b) => self.stack.push((b, 0)),
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

/// Hash of a byte string: its 8-byte words multiplied in, the last word read where it ends
/// (overlapping the one before), then mixed.
#[inline]
pub fn hash_bytes(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let n = b.len();
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let mut h = seed() ^ (n as u64).wrapping_mul(K);
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            h = (h ^ word(i)).wrapping_mul(K).rotate_left(31);
            i += 8;
        }
        h = (h ^ word(n - 8)).wrapping_mul(K);
    } else if n >= 4 {
        let half = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes")) as u64;
        h = (h ^ (half(0) << 32 | half(n - 4))).wrapping_mul(K);
    } else if n > 0 {
        h = (h ^ ((b[0] as u64) << 16 | (b[n / 2] as u64) << 8 | b[n - 1] as u64)).wrapping_mul(K);
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
                sorted.sort_by_key(|a| (a.hash(), a.0, a.1));
                old.push((m.clone(), sorted));
            }
        }
        model.sort_by_key(|a| (a.hash(), a.0, a.1));
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
    fn diff_finds_exactly_what_changed_and_skips_what_is_shared() {
        let mut a: PMap<I> = PMap::default();
        for k in 0..5000u64 {
            a.insert(I(k, 0));
        }
        let mut b = a.clone();
        b.remove_where(17 << 40, |e| e.0 == 17);
        b.insert(I(4242, 1));
        b.insert(I(9001, 0));
        let mut removed = Vec::new();
        let mut added = Vec::new();
        let mut seen = 0;
        a.diff(&b, &mut |old, new| {
            seen += old.len() + new.len();
            for o in old {
                if !new.contains(o) {
                    removed.push((*o).clone());
                }
            }
            for n in new {
                if !old.contains(n) {
                    added.push((*n).clone());
                }
            }
        });
        assert_eq!(removed, vec![I(17, 0)]);
        added.sort_by_key(|e| (e.0, e.1));
        assert_eq!(added, vec![I(4242, 1), I(9001, 0)]);
        assert!(
            seen < 5000,
            "shared parts are skipped: {seen} items looked at"
        );
        let mut none = true;
        a.diff(&a.clone(), &mut |_, _| none = false);
        assert!(none, "a clone differs nowhere");
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
