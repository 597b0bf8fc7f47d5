//! Packing a Sokoban state (player cell and box cells) into one `u128` for hash sets.

/// Packs cell indices into a `u128`, a fixed number of bits each.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyPacker {
    bits: u32,
}

impl KeyPacker {
    /// A packer for rooms of `cells` cells holding `fields` indices of `extra_bits + index bits`
    /// each, or `None` when they do not fit in 128 bits.
    pub(crate) fn new(cells: usize, fields: usize, extra_bits: u32) -> Option<Self> {
        let index_bits = usize::BITS - cells.saturating_sub(1).leading_zeros();
        let bits = index_bits.max(1) + extra_bits;
        (bits as usize * fields <= 128).then_some(Self { bits })
    }

    /// Bits per field.
    #[cfg(test)]
    pub(crate) fn bits(self) -> u32 {
        self.bits
    }

    /// The key of `first` followed by `rest` (which the caller has put in a canonical order).
    #[inline]
    pub(crate) fn pack(self, first: usize, rest: &[usize]) -> u128 {
        let mut key = first as u128;
        for (i, &v) in rest.iter().enumerate() {
            key |= (v as u128) << (self.bits * (i as u32 + 1));
        }
        key
    }

    /// Field `i` of a key.
    #[inline]
    pub(crate) fn field(self, key: u128, i: usize) -> usize {
        ((key >> (self.bits * i as u32)) & ((1u128 << self.bits) - 1)) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack() {
        let p = KeyPacker::new(36, 3, 0).unwrap();
        assert_eq!(p.bits(), 6);
        let key = p.pack(35, &[7, 0]);
        assert_eq!(
            (p.field(key, 0), p.field(key, 1), p.field(key, 2)),
            (35, 7, 0)
        );
    }

    #[test]
    fn too_many_fields_do_not_fit() {
        assert!(KeyPacker::new(1024, 12, 0).is_some());
        assert!(KeyPacker::new(1024, 13, 0).is_none());
        assert_eq!(KeyPacker::new(64, 1, 1).unwrap().bits(), 7);
        assert_eq!(KeyPacker::new(65, 1, 0).unwrap().bits(), 7);
    }
}
