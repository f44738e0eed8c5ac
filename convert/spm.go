package convert

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"unicode/utf8"
)

// This file reads and writes SentencePiece's tokenizer.model: a protocol-buffer ModelProto
// (sentencepiece/src/sentencepiece_model.proto). Only the fields a GGUF vocabulary needs are decoded; the reader
// is a plain walk over the protobuf wire format (protobuf.dev/programming-guides/encoding):
//
//	message := (tag value)*          tag = varint(field_number << 3 | wire_type)
//	wire type 0 varint, 1 fixed64, 2 length-delimited (varint length + bytes), 5 fixed32;
//	3 and 4 (groups) are deprecated and never used by sentencepiece, so they are refused.
//
// Unknown fields are skipped, so models written by newer sentencepiece versions still read.

// SPMModelType is TrainerSpec.ModelType.
type SPMModelType int32

// Model types of sentencepiece_model.proto.
const (
	SPMUnigram SPMModelType = 1
	SPMBPE     SPMModelType = 2
	SPMWord    SPMModelType = 3
	SPMChar    SPMModelType = 4
)

func (t SPMModelType) String() string {
	switch t {
	case SPMUnigram:
		return "unigram"
	case SPMBPE:
		return "bpe"
	case SPMWord:
		return "word"
	case SPMChar:
		return "char"
	}
	return fmt.Sprintf("SPMModelType(%d)", int32(t))
}

// TokenType is a vocabulary entry's kind. The values are SentencePiece.Type's, which GGUF's tokenizer.ggml.token_type
// reuses (llama.cpp enum llama_token_type).
type TokenType int32

// Token types.
const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// Piece is one vocabulary entry of a SentencePiece model.
type Piece struct {
	Text  string
	Score float32
	Type  TokenType
}

// SentencePiece holds the parts of a tokenizer.model that conversion uses. The zero value of each optional field
// is filled with the proto default by ReadSentencePiece.
type SentencePiece struct {
	Pieces       []Piece
	ModelType    SPMModelType
	VocabSize    int32 // TrainerSpec.vocab_size as trained
	ByteFallback bool
	UnkID        int32 // -1 when the model has none
	BOSID        int32
	EOSID        int32
	PadID        int32

	// NormalizerSpec.
	NormalizerName         string
	PrecompiledCharsmap    []byte
	AddDummyPrefix         bool
	RemoveExtraWhitespaces bool
	EscapeWhitespaces      bool
}

// Field numbers of sentencepiece_model.proto.
const (
	fModelPieces      = 1
	fModelTrainer     = 2
	fModelNormalizer  = 3
	fPieceText        = 1
	fPieceScore       = 2
	fPieceType        = 3
	fTrainerModelType = 3
	fTrainerVocabSize = 4
	fTrainerByteFall  = 35
	fTrainerUnkID     = 40
	fTrainerBOSID     = 41
	fTrainerEOSID     = 42
	fTrainerPadID     = 43
	fNormName         = 1
	fNormCharsmap     = 2
	fNormDummyPrefix  = 3
	fNormRemoveWS     = 4
	fNormEscapeWS     = 5
)

const (
	wireVarint  = 0
	wireFixed64 = 1
	wireBytes   = 2
	wireFixed32 = 5
)

// SPMError reports a malformed tokenizer.model, with the byte offset of the problem.
type SPMError struct {
	File   string
	Offset int
	Msg    string
}

func (e *SPMError) Error() string {
	return fmt.Sprintf("%s: offset %d: %s", e.File, e.Offset, e.Msg)
}

// OpenSentencePiece reads a tokenizer.model file.
func OpenSentencePiece(path string) (*SentencePiece, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ReadSentencePiece(path, b)
}

// ReadSentencePiece decodes a ModelProto; name labels errors.
func ReadSentencePiece(name string, b []byte) (*SentencePiece, error) {
	sp := &SentencePiece{
		// Proto defaults (sentencepiece_model.proto).
		ModelType: SPMUnigram, UnkID: 0, BOSID: 1, EOSID: 2, PadID: -1,
		AddDummyPrefix: true, RemoveExtraWhitespaces: true, EscapeWhitespaces: true,
	}
	d := &pbDecoder{name: name, b: b}
	err := d.fields(0, len(b), func(field, wire, start, end int, v uint64) error {
		switch {
		case field == fModelPieces && wire == wireBytes:
			p, err := d.piece(start, end)
			if err != nil {
				return err
			}
			sp.Pieces = append(sp.Pieces, p)
		case field == fModelTrainer && wire == wireBytes:
			return d.trainer(sp, start, end)
		case field == fModelNormalizer && wire == wireBytes:
			return d.normalizer(sp, start, end)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(sp.Pieces) == 0 {
		return nil, &SPMError{name, 0, "no pieces: not a SentencePiece model"}
	}
	return sp, nil
}

type pbDecoder struct {
	name string
	b    []byte
}

func (d *pbDecoder) fail(off int, format string, args ...any) error {
	return &SPMError{d.name, off, fmt.Sprintf(format, args...)}
}

// varint reads a base-128 varint at off within [off, end).
func (d *pbDecoder) varint(off, end int) (uint64, int, error) {
	var v uint64
	for i := 0; i < 10; i++ {
		if off+i >= end {
			return 0, 0, d.fail(off, "truncated varint")
		}
		c := d.b[off+i]
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, off + i + 1, nil
		}
	}
	return 0, 0, d.fail(off, "varint longer than 10 bytes")
}

// fields walks the message in [off, end), calling fn with each field; for length-delimited fields [start, end) is
// the payload, for the others v is the value.
func (d *pbDecoder) fields(off, end int, fn func(field, wire, start, end int, v uint64) error) error {
	for off < end {
		tagOff := off
		tag, next, err := d.varint(off, end)
		if err != nil {
			return err
		}
		off = next
		field, wire := int(tag>>3), int(tag&7)
		if field == 0 || tag>>3 > math.MaxInt32 {
			return d.fail(tagOff, "invalid field number %d", tag>>3)
		}
		var v uint64
		start := off
		switch wire {
		case wireVarint:
			if v, off, err = d.varint(off, end); err != nil {
				return err
			}
		case wireFixed64:
			if end-off < 8 {
				return d.fail(off, "field %d: truncated fixed64", field)
			}
			v = binary.LittleEndian.Uint64(d.b[off:])
			off += 8
		case wireFixed32:
			if end-off < 4 {
				return d.fail(off, "field %d: truncated fixed32", field)
			}
			v = uint64(binary.LittleEndian.Uint32(d.b[off:]))
			off += 4
		case wireBytes:
			n, next, err := d.varint(off, end)
			if err != nil {
				return err
			}
			if n > uint64(end-next) {
				return d.fail(off, "field %d: length %d runs past the end of its message (%d bytes left)", field,
					n, end-next)
			}
			start, off = next, next+int(n)
		default:
			return d.fail(tagOff, "field %d: unsupported wire type %d", field, wire)
		}
		if err := fn(field, wire, start, off, v); err != nil {
			return err
		}
	}
	return nil
}

func (d *pbDecoder) piece(off, end int) (Piece, error) {
	p := Piece{Type: TokenNormal}
	err := d.fields(off, end, func(field, wire, start, end int, v uint64) error {
		switch {
		case field == fPieceText && wire == wireBytes:
			if !utf8.Valid(d.b[start:end]) {
				return d.fail(start, "piece text is not valid UTF-8")
			}
			p.Text = string(d.b[start:end])
		case field == fPieceScore && wire == wireFixed32:
			p.Score = math.Float32frombits(uint32(v))
		case field == fPieceType && wire == wireVarint:
			if v < uint64(TokenNormal) || v > uint64(TokenByte) {
				return d.fail(start, "piece type %d is not one of 1 (normal) to 6 (byte)", v)
			}
			p.Type = TokenType(v)
		}
		return nil
	})
	return p, err
}

func (d *pbDecoder) trainer(sp *SentencePiece, off, end int) error {
	return d.fields(off, end, func(field, wire, start, end int, v uint64) error {
		if wire != wireVarint {
			return nil
		}
		// int32 fields are encoded as 64-bit two's complement varints.
		i := int32(int64(v))
		switch field {
		case fTrainerModelType:
			sp.ModelType = SPMModelType(i)
		case fTrainerVocabSize:
			sp.VocabSize = i
		case fTrainerByteFall:
			sp.ByteFallback = v != 0
		case fTrainerUnkID:
			sp.UnkID = i
		case fTrainerBOSID:
			sp.BOSID = i
		case fTrainerEOSID:
			sp.EOSID = i
		case fTrainerPadID:
			sp.PadID = i
		}
		return nil
	})
}

func (d *pbDecoder) normalizer(sp *SentencePiece, off, end int) error {
	return d.fields(off, end, func(field, wire, start, end int, v uint64) error {
		switch {
		case field == fNormName && wire == wireBytes:
			sp.NormalizerName = string(d.b[start:end])
		case field == fNormCharsmap && wire == wireBytes:
			sp.PrecompiledCharsmap = append([]byte(nil), d.b[start:end]...)
		case field == fNormDummyPrefix && wire == wireVarint:
			sp.AddDummyPrefix = v != 0
		case field == fNormRemoveWS && wire == wireVarint:
			sp.RemoveExtraWhitespaces = v != 0
		case field == fNormEscapeWS && wire == wireVarint:
			sp.EscapeWhitespaces = v != 0
		}
		return nil
	})
}

// Marshal encodes the model as a ModelProto that sentencepiece loads: the pieces, a TrainerSpec with the model type,
// vocabulary size, byte fallback and special ids, and a NormalizerSpec. Fields are written in field-number order, as
// protobuf serialisers do.
func (sp *SentencePiece) Marshal() []byte {
	var b []byte
	for _, p := range sp.Pieces {
		var m []byte
		m = pbBytes(m, fPieceText, []byte(p.Text))
		m = pbFixed32(m, fPieceScore, math.Float32bits(p.Score))
		if p.Type != TokenNormal { // the default is not written, as protobuf serialisers do
			m = pbVarint(m, fPieceType, uint64(p.Type))
		}
		b = pbBytes(b, fModelPieces, m)
	}
	var t []byte
	t = pbVarint(t, fTrainerModelType, uint64(sp.ModelType))
	t = pbVarint(t, fTrainerVocabSize, uint64(int64(sp.VocabSize)))
	t = pbVarint(t, fTrainerByteFall, boolVarint(sp.ByteFallback))
	t = pbVarint(t, fTrainerUnkID, uint64(int64(sp.UnkID)))
	t = pbVarint(t, fTrainerBOSID, uint64(int64(sp.BOSID)))
	t = pbVarint(t, fTrainerEOSID, uint64(int64(sp.EOSID)))
	t = pbVarint(t, fTrainerPadID, uint64(int64(sp.PadID)))
	b = pbBytes(b, fModelTrainer, t)
	var n []byte
	n = pbBytes(n, fNormName, []byte(sp.NormalizerName))
	if len(sp.PrecompiledCharsmap) > 0 {
		n = pbBytes(n, fNormCharsmap, sp.PrecompiledCharsmap)
	}
	n = pbVarint(n, fNormDummyPrefix, boolVarint(sp.AddDummyPrefix))
	n = pbVarint(n, fNormRemoveWS, boolVarint(sp.RemoveExtraWhitespaces))
	n = pbVarint(n, fNormEscapeWS, boolVarint(sp.EscapeWhitespaces))
	return pbBytes(b, fModelNormalizer, n)
}

func boolVarint(x bool) uint64 {
	if x {
		return 1
	}
	return 0
}

func pbTag(b []byte, field, wire int) []byte {
	return binary.AppendUvarint(b, uint64(field)<<3|uint64(wire))
}

func pbVarint(b []byte, field int, v uint64) []byte {
	return binary.AppendUvarint(pbTag(b, field, wireVarint), v)
}

func pbFixed32(b []byte, field int, v uint32) []byte {
	return binary.LittleEndian.AppendUint32(pbTag(b, field, wireFixed32), v)
}

func pbBytes(b []byte, field int, p []byte) []byte {
	b = binary.AppendUvarint(pbTag(b, field, wireBytes), uint64(len(p)))
	return append(b, p...)
}
