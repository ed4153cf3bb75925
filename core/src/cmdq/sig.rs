//! Signatures: a byte that makes the XOR of a range come out as `0xff`
//! (`reference/mlx5-ifc.md` §4.3). Checking one is therefore "does the
//! range XOR to `0xff`", whatever the other bytes hold.

/// XOR of every byte.
pub(crate) fn xor8(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, b| acc ^ b)
}

/// The signature byte for `bytes`, computed with the signature's own byte
/// (somewhere inside `bytes`) still zero.
pub(crate) fn signature(bytes: &[u8]) -> u8 {
    !xor8(bytes)
}

/// Whether a signed range checks.
pub(crate) fn verifies(bytes: &[u8]) -> bool {
    xor8(bytes) == 0xff
}
