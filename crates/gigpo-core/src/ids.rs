//! Newtype indices into a [`Batch`](crate::Batch).

use serde::{Deserialize, Serialize};

/// What every index type can do, for code shared between them (the interned text tables).
pub trait Index: Copy {
    /// The index with number `n`.
    fn from_u32(n: u32) -> Self;
    /// The index as a `usize`, for slicing.
    fn index(self) -> usize;
}

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u32);

        impl $name {
            /// The index as a `usize`, for slicing.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl Index for $name {
            fn from_u32(n: u32) -> Self {
                Self(n)
            }

            fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_type!(
    /// An episode group: trajectories that started from the same initial state.
    GroupId
);
index_type!(
    /// A trajectory (one episode) in a batch, in insertion order.
    TrajId
);
index_type!(
    /// An interned anchor key. Equal ids mean equal key text.
    AnchorId
);
index_type!(
    /// An interned action key. Equal ids mean equal action text.
    ActionId
);
index_type!(
    /// A step group: steps of one episode group that share an anchor state.
    StepGroupId
);
