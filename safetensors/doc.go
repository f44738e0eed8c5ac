// Package safetensors reads and writes the safetensors format: a u64 little-endian header length N, N bytes of
// JSON describing each tensor's dtype, shape and data_offsets, then the tensor bytes back to back.
//
// Open and NewReader return a *File; OpenDir and OpenIndex return a *Model over the shards of a checkpoint. Both
// implement Set. NewWriter streams a file (to a pipe if need be); WriteFile and WriteShards write whole files
// atomically.
//
// Every file is validated as strictly as the Rust reference reader (safetensors/src/tensor.rs, read_metadata and
// Metadata::validate; ../shared/reference/formats-quant.md §4.2): header length at most 100,000,000 bytes and
// inside the file, UTF-8, the JSON that serde_json accepts, tensors contiguous from offset 0 without gaps or
// overlaps, each exactly as large as its shape and dtype require (sub-byte types filling whole bytes), and no bytes
// after the last tensor. Nothing is allocated from a size the file declares until the file is known to hold it.
// Where lathe differs from the reference it is stricter, never looser:
//   - duplicate keys anywhere in the header are refused (serde keeps the last tensor or metadata entry);
//   - a shape dimension above 2^63-1 is refused even beside a zero dimension (tensor.Shape is int64);
//   - the FNUZ float8 types are refused as unsupported (tensor has no such types);
//   - a tensor entry must be a JSON object (serde would also take a 3-element array).
//
// Like the reference, unknown fields inside a tensor entry are ignored (a rewrite drops them), __metadata__ may be
// null, and the header may start and end with JSON whitespace: the README says the header "MUST begin with {", but
// the reference checked that only briefly (2023) and since PR #686 (2026) accepts leading whitespace on purpose, so
// that writers can align the data.
package safetensors
