//! Block hashes: the BLAKE3 tree of a volume's content, cut at fixed-size blocks.
//!
//! BLAKE3 hashes its input as a binary tree of 1 KiB chunks. A block of [`BLOCK_SIZE`] bytes
//! (a power of two of chunks) that starts at a multiple of its size is a whole subtree of that
//! tree, and its *chaining value* (the subtree's non-root hash, [`blake3::hazmat`]) is what
//! Ferry calls the block's hash. That choice gives three things at once:
//!
//! - **One pass.** Hashing a volume block by block and merging the blocks' chaining values
//!   yields exactly `blake3::hash` of the whole content, so an upload computes the volume's
//!   checksum and its block hashes in the same pass, at the cost of one.
//! - **A self-checking list.** The stored block hashes merge into the volume's checksum, so a
//!   corrupted or stale block-hash file is detected by merging it ([`Tree`]), without reading
//!   the volume.
//! - **Offsets built in.** A block's chaining value covers its position (the chunk counter),
//!   so two equal hashes mean the same bytes at the same offset, which is what a delta needs.
//!
//! docs/PROTOCOL.md (the volume program's BLOCK_HASHES) specifies the same computation for
//! other peers, with a test vector.

use std::io::{self, Write};

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};
use ferry_codec::ZEROS;

/// Bytes per block: 256 KiB (256 BLAKE3 chunks).
///
/// Smaller blocks send less around a small change (a guest's 4 KiB write costs one block), larger
/// ones keep the list short (32 bytes per block: 1/8192 of the volume, 512 KiB for 4 GiB, so
/// fetched a page of 96 per round trip). 256 KiB is also the default stream chunk, so a changed
/// block is one STREAM frame.
pub const BLOCK_SIZE: u64 = 256 * 1024;

/// A block's hash: the chaining value of its subtree.
pub type BlockHash = ChainingValue;

/// Block sizes a peer may announce: powers of two from one BLAKE3 chunk to 16 MiB.
pub fn valid_block_size(size: u64) -> bool {
    size.is_power_of_two() && (blake3::CHUNK_LEN as u64..=16 << 20).contains(&size)
}

/// The number of blocks of a volume of `size` bytes (the last one may be short).
pub fn block_count(size: u64, block_size: u64) -> u64 {
    size.div_ceil(block_size)
}

/// The hash of block `index` whose content is `content` (the whole block: `block_size` bytes,
/// or fewer for the last block of a volume).
pub fn block_hash(index: u64, block_size: u64, content: &[u8]) -> BlockHash {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(index * block_size);
    hasher.update(content);
    hasher.finalize_non_root()
}

/// Merges block hashes, in block order, into the content's BLAKE3.
///
/// A block's hash is pushed only when the next one arrives (the last one might be the right
/// edge of the root), the others are merged eagerly as BLAKE3's reference implementation does:
/// memory is a stack of at most 64 hashes whatever the volume's size.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// Roots of complete subtrees, largest first.
    stack: Vec<ChainingValue>,
    /// The last block pushed, not yet merged.
    pending: Option<ChainingValue>,
    /// Blocks merged into `stack`.
    merged: u64,
}

impl Tree {
    pub fn push(&mut self, hash: BlockHash) {
        if let Some(mut cv) = self.pending.replace(hash) {
            // Another block follows, so none of these merges is the root.
            self.merged += 1;
            let mut total = self.merged;
            while total & 1 == 0 {
                let left = self.stack.pop().expect("a complete left subtree");
                cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
                total >>= 1;
            }
            self.stack.push(cv);
        }
    }

    /// Blocks pushed so far.
    pub fn blocks(&self) -> u64 {
        self.merged + u64::from(self.pending.is_some())
    }

    /// The BLAKE3 of the content whose blocks were pushed. With fewer than two blocks the
    /// tree has no parent node and the root is the block's own (root) hash: `single` gives it
    /// (the hash of the one block as a whole input, or of nothing).
    pub fn root(&self, single: impl FnOnce() -> [u8; 32]) -> [u8; 32] {
        if self.merged == 0 {
            return single();
        }
        let mut right = self.pending.expect("the last block");
        let (first, rest) = self.stack.split_first().expect("a merged block");
        for left in rest.iter().rev() {
            right = merge_subtrees_non_root(left, &right, Mode::Hash);
        }
        *merge_subtrees_root(first, &right, Mode::Hash).as_bytes()
    }
}

/// BLAKE3 of a stream of content (data, and holes as zeros) that also yields its block
/// hashes, written to `out` as 32 raw bytes each, in order, as each block is known to be
/// complete (the last one at [`finish`](Self::finish)).
pub struct TreeHash<W = io::Sink> {
    block_size: u64,
    /// The current block's hasher, begun at its offset.
    block: blake3::Hasher,
    /// The current block's hash when it came whole ([`known_block`](Self::known_block)), not
    /// as bytes through `block`.
    known: Option<BlockHash>,
    in_block: u64,
    tree: Tree,
    out: W,
    bytes: u64,
    hole_bytes: u64,
    /// Whether a block's bytes are hashed on every core ([`parallel`](Self::parallel)).
    parallel: bool,
}

impl Default for TreeHash {
    fn default() -> Self {
        Self::new(BLOCK_SIZE, io::sink())
    }
}

impl<W: Write> TreeHash<W> {
    /// `block_size` must satisfy [`valid_block_size`].
    pub fn new(block_size: u64, out: W) -> Self {
        debug_assert!(valid_block_size(block_size));
        Self {
            block_size,
            block: blake3::Hasher::new(),
            known: None,
            in_block: 0,
            tree: Tree::default(),
            out,
            bytes: 0,
            hole_bytes: 0,
            parallel: false,
        }
    }

    /// Hashes each piece of data on all cores (rayon's pool; BLAKE3 splits a piece into
    /// subtrees), for a process that has the machine to itself, such as `ferry` reading the
    /// file it transfers: hashing is most of what it does. A node serving many connections
    /// keeps to one core per transfer.
    pub fn parallel(mut self) -> Self {
        self.parallel = true;
        self
    }

    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// Content bytes hashed so far, holes included.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of it hashed as holes.
    pub fn hole_bytes(&self) -> u64 {
        self.hole_bytes
    }

    /// Where the hashes go.
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn data(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            self.roll()?;
            let room = (self.block_size - self.in_block).min(bytes.len() as u64) as usize;
            if self.parallel {
                self.block.update_rayon(&bytes[..room]);
            } else {
                self.block.update(&bytes[..room]);
            }
            self.in_block += room as u64;
            bytes = &bytes[room..];
        }
        Ok(())
    }

    /// Hashes `length` zeros (a hole), asking `go_on` between slices: a hole costs its sender
    /// a few bytes but its hashing time grows with its length, so a caller whose transfer
    /// ended stops it. Returns whether all of it was hashed (if not, the hash is of no use).
    pub fn zeros_while(
        &mut self,
        length: u64,
        mut go_on: impl FnMut() -> bool,
    ) -> io::Result<bool> {
        let mut left = length;
        while left > 0 {
            if !go_on() {
                return Ok(false);
            }
            let n = left.min(ZEROS.len() as u64) as usize;
            self.data(&ZEROS[..n])?;
            self.hole_bytes += n as u64;
            left -= n as u64;
        }
        Ok(true)
    }

    /// Appends a whole block by its hash instead of its bytes: a block a delta keeps from a
    /// base whose block hashes are known, so the content's BLAKE3 comes out without reading
    /// it. The content so far must end at a block boundary past the first block (a content
    /// of one block has no parent node, and its root cannot be made from its chaining value);
    /// anything else is an `InvalidInput` error and changes nothing.
    pub fn known_block(&mut self, hash: BlockHash) -> io::Result<()> {
        if !self.in_block.is_multiple_of(self.block_size) || self.bytes < self.block_size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a block known by its hash at offset {}: not a block boundary past the first block",
                    self.bytes
                ),
            ));
        }
        self.roll()?;
        self.known = Some(hash);
        self.in_block = self.block_size;
        self.bytes += self.block_size;
        Ok(())
    }

    /// The hash of the block being filled, as if it ended here: once a block's bytes are all
    /// in, this is its block hash (compared before deciding to send it).
    pub fn current_block(&self) -> BlockHash {
        self.known.unwrap_or_else(|| self.block.finalize_non_root())
    }

    /// The BLAKE3 of everything hashed so far, as if the content ended here.
    pub fn root(&self) -> [u8; 32] {
        if self.tree.blocks() == 0 {
            return *self.block.finalize().as_bytes();
        }
        let mut tree = self.tree.clone();
        if self.in_block > 0 {
            tree.push(self.current_block());
        }
        tree.root(|| unreachable!("a tree with a block pushed has a second one"))
    }

    /// Ends the content: writes the last block's hash, flushes the output and returns the
    /// content's BLAKE3. Nothing may be hashed after this.
    pub fn finish(&mut self) -> io::Result<[u8; 32]> {
        let root = self.root();
        if self.in_block > 0 {
            self.out.write_all(&self.current_block())?;
        }
        self.out.flush()?;
        Ok(root)
    }

    pub fn into_out(self) -> W {
        self.out
    }

    /// Closes the current block if it is full: more content is coming, so it is not the last.
    fn roll(&mut self) -> io::Result<()> {
        if self.in_block < self.block_size {
            return Ok(());
        }
        let hash = self.current_block();
        self.out.write_all(&hash)?;
        self.tree.push(hash);
        self.known = None;
        self.block = blake3::Hasher::new();
        self.block
            .set_input_offset(self.tree.blocks() * self.block_size);
        self.in_block = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    #[test]
    fn the_root_is_blake3_of_the_content_at_every_shape() {
        let bs = 4096;
        for len in [
            0,
            1,
            1023,
            1024,
            1025,
            4095,
            4096,
            4097,
            8192,
            12288,
            12289,
            3 * 4096 + 5,
            8 * 4096,
            8 * 4096 + 1,
            13 * 4096 + 77,
        ] {
            let data = content(len);
            for (piece, parallel) in [(1usize, false), (1000, false), (4096, true), (5000, true)] {
                let mut hash = TreeHash::new(bs, Vec::new());
                if parallel {
                    hash = hash.parallel();
                }
                for part in data.chunks(piece) {
                    hash.data(part).unwrap();
                }
                assert_eq!(
                    hash.root(),
                    *blake3::hash(&data).as_bytes(),
                    "len {len}, piece {piece}"
                );
                let root = hash.finish().unwrap();
                let out = hash.into_out();
                assert_eq!(root, *blake3::hash(&data).as_bytes());
                // The block hashes, computed one by one, merge into the same root.
                let blocks: Vec<BlockHash> = data
                    .chunks(bs as usize)
                    .enumerate()
                    .map(|(i, block)| block_hash(i as u64, bs, block))
                    .collect();
                assert_eq!(out, blocks.concat(), "len {len}");
                let mut tree = Tree::default();
                blocks.iter().for_each(|hash| tree.push(*hash));
                assert_eq!(tree.root(|| *blake3::hash(&data).as_bytes()), root);
            }
        }
    }

    #[test]
    fn zeros_hash_as_zero_bytes_and_a_changed_block_changes_only_its_hash() {
        let bs = BLOCK_SIZE;
        let mut hash = TreeHash::new(bs, Vec::new());
        hash.data(&content(1000)).unwrap();
        assert!(hash.zeros_while(3 * bs, || true).unwrap());
        let mut expected = content(1000);
        expected.resize(1000 + 3 * bs as usize, 0);
        let root = hash.finish().unwrap();
        let before = hash.into_out();
        assert_eq!(root, *blake3::hash(&expected).as_bytes());

        expected[2 * bs as usize + 9] = 1;
        let mut hash = TreeHash::new(bs, Vec::new());
        hash.data(&expected).unwrap();
        hash.finish().unwrap();
        let after = hash.into_out();
        let differing: Vec<usize> = (0..4)
            .filter(|i| before[i * 32..][..32] != after[i * 32..][..32])
            .collect();
        assert_eq!(differing, [2]);
    }

    #[test]
    fn blocks_known_by_their_hash_give_the_same_root_and_list() {
        let bs = 4096u64;
        for len in [2 * 4096, 2 * 4096 + 7, 5 * 4096, 9 * 4096 + 100] {
            let data = content(len);
            let hashes: Vec<BlockHash> = data
                .chunks(bs as usize)
                .enumerate()
                .map(|(i, block)| block_hash(i as u64, bs, block))
                .collect();
            // Every whole block past the first, in turn, arrives by its hash.
            for known in 1..(len as u64 / bs) {
                let mut hash = TreeHash::new(bs, Vec::new());
                for (i, block) in data.chunks(bs as usize).enumerate() {
                    if i as u64 == known {
                        hash.known_block(hashes[i]).unwrap();
                    } else {
                        hash.data(block).unwrap();
                    }
                }
                assert_eq!(hash.bytes(), len as u64);
                assert_eq!(hash.finish().unwrap(), *blake3::hash(&data).as_bytes());
                assert_eq!(hash.into_out(), hashes.concat(), "len {len}, known {known}");
            }
        }
        // Not at a boundary, or the first block: refused, nothing changed.
        let mut hash = TreeHash::new(bs, Vec::new());
        assert!(hash.known_block([1; 32]).is_err());
        hash.data(&content(100)).unwrap();
        assert!(hash.known_block([1; 32]).is_err());
        assert_eq!(hash.root(), *blake3::hash(&content(100)).as_bytes());
    }

    #[test]
    fn a_stopped_hole_says_so() {
        let mut hash = TreeHash::default();
        let mut asked = 0;
        assert!(
            !hash
                .zeros_while(10 << 20, || {
                    asked += 1;
                    asked < 3
                })
                .unwrap()
        );
    }

    /// docs/PROTOCOL.md section 14's vector: 640 KiB of `i mod 251`, three blocks (the last
    /// one half full), and one short volume of 1000 bytes (its only block's hash is not its
    /// checksum: a volume of one block has no parent node).
    #[test]
    fn the_protocol_vector() {
        let content: Vec<u8> = (0..655_360u64).map(|i| (i % 251) as u8).collect();
        let hashes: Vec<String> = content
            .chunks(BLOCK_SIZE as usize)
            .enumerate()
            .map(|(i, block)| hex::encode(block_hash(i as u64, BLOCK_SIZE, block)))
            .collect();
        assert_eq!(
            hashes,
            [
                "69febc864103726f98eba5f7437ed4da193c9d6cb02d46036729c1ea9dc3ffad",
                "fbdad66a00633e69d549ba33eea2a863640581ce5e5f58b15125cc71f674a33c",
                "56f2caa15d35d3c27cff08bcc16d4d4acdde005eb9838bc00d14d6d925986da1",
            ]
        );
        assert_eq!(
            blake3::hash(&content).to_hex().as_str(),
            "fea025ac9d2373f1dc409935cf4e67cfe642d41f11692b6bce8714d2090aba50"
        );
        let short = &content[..1000];
        assert_eq!(
            hex::encode(block_hash(0, BLOCK_SIZE, short)),
            "74e7a1df3301b34a296b77dbbe3a02ed164d2710c7f34a1eb60ce08d8139cf38"
        );
        assert_eq!(
            blake3::hash(short).to_hex().as_str(),
            "b43670a52d1af24abdac5d2c3ed19ff4e62b60a618e823ad555888b1b0b91cff"
        );
    }
}
