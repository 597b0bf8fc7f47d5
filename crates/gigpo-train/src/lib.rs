//! gigpo-train
