//! Generation-checked tables: a key is a slot index plus the generation of what was put there,
//! so a stale key (its value removed, the slot reused) finds nothing instead of the newcomer.
//!
//! `Slots` owns its values (the loop's connections and sessions, Socket.IO's sockets);
//! `SlotMap` attaches values to keys another `Slots` hands out (Socket.IO's per-session state,
//! indexed by the loop's session ids). Both are arrays indexed by slot: a lookup costs no
//! hashing. `Slots` reuses freed slots first, so indices stay dense and a `SlotMap` small.

use slab::Slab;

/// A key into `Slots`: a slot index and a generation.
pub trait SlotKey: Copy {
    /// The key for slot `idx` holding generation `generation`.
    fn new(idx: u32, generation: u32) -> Self;
    /// The slot.
    fn idx(&self) -> u32;
    /// The generation of the value it names.
    fn generation(&self) -> u32;
}

/// Values under generation-checked keys.
#[derive(Debug)]
pub struct Slots<K, T> {
    entries: Slab<(u32, T)>,
    next_generation: u32,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K, T> Default for Slots<K, T> {
    fn default() -> Self {
        Slots {
            entries: Slab::new(),
            next_generation: 0,
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: SlotKey, T> Slots<K, T> {
    /// Stores `value`.
    pub fn insert(&mut self, value: T) -> K {
        self.next_generation = self.next_generation.wrapping_add(1);
        // Slot indices fit u32: four billion live entries would exhaust memory first.
        let idx = self.entries.insert((self.next_generation, value));
        K::new(idx as u32, self.next_generation)
    }

    /// The value under `key`, if it is still there.
    pub fn get(&self, key: K) -> Option<&T> {
        match self.entries.get(key.idx() as usize) {
            Some((generation, value)) if *generation == key.generation() => Some(value),
            _ => None,
        }
    }

    /// The value under `key`, if it is still there.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        match self.entries.get_mut(key.idx() as usize) {
            Some((generation, value)) if *generation == key.generation() => Some(value),
            _ => None,
        }
    }

    /// The value in slot `idx` and its key, whatever its generation (for readiness events,
    /// which carry the slot only).
    pub fn get_slot_mut(&mut self, idx: usize) -> Option<(K, &mut T)> {
        let (generation, value) = self.entries.get_mut(idx)?;
        Some((K::new(idx as u32, *generation), value))
    }

    /// Takes the value under `key` out, if it is still there.
    pub fn remove(&mut self, key: K) -> Option<T> {
        self.get(key)?;
        Some(self.entries.remove(key.idx() as usize).1)
    }

    /// Whether `key` names a value.
    pub fn contains(&self, key: K) -> bool {
        self.get(key).is_some()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every value with its key.
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.entries
            .iter()
            .map(|(idx, (generation, value))| (K::new(idx as u32, *generation), value))
    }
}

/// Values attached to keys handed out by some `Slots`: one per live key at most.
#[derive(Debug)]
pub struct SlotMap<K, T> {
    entries: Vec<Option<(u32, T)>>,
    len: usize,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K, T> Default for SlotMap<K, T> {
    fn default() -> Self {
        SlotMap {
            entries: Vec::new(),
            len: 0,
            _key: std::marker::PhantomData,
        }
    }
}

impl<K: SlotKey, T> SlotMap<K, T> {
    /// Attaches `value` to `key` (replacing what an older key of that slot had).
    pub fn insert(&mut self, key: K, value: T) {
        let idx = key.idx() as usize;
        if self.entries.len() <= idx {
            self.entries.resize_with(idx + 1, || None);
        }
        if self.entries[idx]
            .replace((key.generation(), value))
            .is_none()
        {
            self.len += 1;
        }
    }

    /// The value attached to `key`.
    pub fn get(&self, key: K) -> Option<&T> {
        match self.entries.get(key.idx() as usize) {
            Some(Some((generation, value))) if *generation == key.generation() => Some(value),
            _ => None,
        }
    }

    /// The value attached to `key`.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        match self.entries.get_mut(key.idx() as usize) {
            Some(Some((generation, value))) if *generation == key.generation() => Some(value),
            _ => None,
        }
    }

    /// Detaches the value of `key`.
    pub fn remove(&mut self, key: K) -> Option<T> {
        let slot = self.entries.get_mut(key.idx() as usize)?;
        match slot {
            Some((generation, _)) if *generation == key.generation() => {
                self.len -= 1;
                slot.take().map(|(_, value)| value)
            }
            _ => None,
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Key(u32, u32);

    impl SlotKey for Key {
        fn new(idx: u32, generation: u32) -> Self {
            Key(idx, generation)
        }
        fn idx(&self) -> u32 {
            self.0
        }
        fn generation(&self) -> u32 {
            self.1
        }
    }

    #[test]
    fn a_stale_key_never_reaches_the_next_value_in_its_slot() {
        let mut slots: Slots<Key, &str> = Slots::default();
        let old = slots.insert("old");
        assert_eq!(slots.remove(old), Some("old"));
        let new = slots.insert("new");
        assert_eq!(new.idx(), old.idx(), "the slot is reused");
        assert_eq!(slots.get(old), None);
        assert_eq!(slots.remove(old), None);
        assert_eq!(slots.get(new), Some(&"new"));
        assert_eq!(slots.len(), 1);
        let (key, value) = slots.get_slot_mut(new.idx() as usize).unwrap();
        assert_eq!((key, *value), (new, "new"));
        assert_eq!(slots.iter().count(), 1);

        let mut map: SlotMap<Key, u8> = SlotMap::default();
        map.insert(old, 1);
        map.insert(new, 2);
        assert_eq!(map.len(), 1, "the newer key replaced the older in its slot");
        assert_eq!(map.get(old), None);
        assert_eq!(map.remove(old), None);
        assert_eq!(map.remove(new), Some(2));
        assert!(map.is_empty());
    }
}
