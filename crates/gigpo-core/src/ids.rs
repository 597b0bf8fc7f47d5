//! Newtype indices into a [`Batch`](crate::Batch).

use serde::{Deserialize, Serialize};

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
    /// A step group: steps of one episode group that share an anchor state.
    StepGroupId
);
