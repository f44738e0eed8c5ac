package convert

import (
	"errors"
	"math"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
)

// TestReadSentencePieceMatchesLlamaCpp: the reference tokenizer.model read by lathe gives exactly the tokens,
// scores and types llama.cpp's converter (through the sentencepiece library) stored in the reference GGUF.
func TestReadSentencePieceMatchesLlamaCpp(t *testing.T) {
	sp, err := OpenSentencePiece(filepath.Join(tinyLlama(t), "hf", "tokenizer.model"))
	if err != nil {
		t.Fatal(err)
	}
	ref := openGGUF(t, filepath.Join(tinyLlama(t), "gguf", "tiny-llama-a-f32.gguf"))
	toks, _ := ref.Metadata.Strings(keyTokens)
	scores, _ := gguf.Values[float32](ref.Metadata, keyTokScores)
	types, _ := gguf.Values[int32](ref.Metadata, keyTokTypes)
	if len(sp.Pieces) != len(toks) {
		t.Fatalf("%d pieces, the GGUF has %d tokens", len(sp.Pieces), len(toks))
	}
	for i, p := range sp.Pieces {
		if p.Text != toks[i] || math.Float32bits(p.Score) != math.Float32bits(scores[i]) || int32(p.Type) != types[i] {
			t.Errorf("piece %d = %q %g %d, GGUF has %q %g %d", i, p.Text, p.Score, p.Type, toks[i], scores[i], types[i])
		}
	}
	if sp.ModelType != SPMBPE || !sp.ByteFallback || sp.VocabSize != 1024 || sp.UnkID != 0 || sp.BOSID != 1 ||
		sp.EOSID != 2 || sp.PadID != -1 || sp.NormalizerName != "identity" || !sp.AddDummyPrefix ||
		sp.RemoveExtraWhitespaces {
		t.Errorf("specs: %+v", *sp)
	}
}

func TestSentencePieceMarshalRoundTrip(t *testing.T) {
	sp := spmModel(20)
	sp.Pieces[270].Type = TokenUserDefined
	sp.Pieces[271].Score = float32(math.Copysign(0, -1))
	sp.PrecompiledCharsmap = []byte{1, 2, 3}
	sp.RemoveExtraWhitespaces = true
	got, err := ReadSentencePiece("x", sp.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, sp) {
		t.Errorf("read back %+v\nwant %+v", *got, *sp)
	}
}

// TestReadSentencePieceMalformed: each broken input is refused with the offset of the problem.
func TestReadSentencePieceMalformed(t *testing.T) {
	piece := func(b ...byte) []byte { return append([]byte{0x0a, byte(len(b))}, b...) }
	for _, tc := range []struct {
		name string
		data []byte
		off  int
	}{
		{"empty", nil, 0},
		{"truncated tag", []byte{0x8a}, 0},
		{"length past end", []byte{0x0a, 0x05, 0x0a}, 1},
		{"piece length past its message", piece(0x0a, 0x09, 'a'), 3},
		{"group wire type", []byte{0x0b}, 0},
		{"field zero", []byte{0x02, 0x00}, 0},
		{"bad utf-8", piece(0x0a, 0x01, 0xff), 4},
		{"bad type", piece(0x0a, 0x01, 'a', 0x18, 0x09), 6},
		{"truncated fixed32", piece(0x15, 0x00, 0x00), 3},
		{"overlong varint", append([]byte{0x10}, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01), 1},
	} {
		_, err := ReadSentencePiece("tokenizer.model", tc.data)
		var se *SPMError
		if !errors.As(err, &se) || se.Offset != tc.off || se.File != "tokenizer.model" {
			t.Errorf("%s: %v, want an SPMError at offset %d", tc.name, err, tc.off)
		}
	}
}

func FuzzReadSentencePiece(f *testing.F) {
	// Small seeds: the fuzzer minimises every new input, which takes long on a 13 KB model.
	small := &SentencePiece{ModelType: SPMBPE, VocabSize: 4, BOSID: 1, EOSID: 2, PadID: -1, NormalizerName: "identity",
		Pieces: []Piece{{"<unk>", 0, TokenUnknown}, {"<s>", 0, TokenControl}, {"<0x41>", 0, TokenByte},
			{"\u2581a", -1, TokenNormal}}}
	f.Add(small.Marshal())
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x03, 'a', 'b', 'c'})
	f.Fuzz(func(t *testing.T, data []byte) {
		sp, err := ReadSentencePiece("fuzz", data)
		if err != nil {
			return
		}
		// Whatever reads must write and read back to the same model.
		again, err := ReadSentencePiece("fuzz", sp.Marshal())
		if err != nil {
			t.Fatalf("re-reading a marshalled model: %v", err)
		}
		if len(again.Pieces) != len(sp.Pieces) {
			t.Fatalf("%d pieces, then %d", len(sp.Pieces), len(again.Pieces))
		}
		for i := range sp.Pieces {
			a, b := sp.Pieces[i], again.Pieces[i]
			if a.Text != b.Text || math.Float32bits(a.Score) != math.Float32bits(b.Score) || a.Type != b.Type {
				t.Fatalf("piece %d: %+v then %+v", i, a, b)
			}
		}
	})
}

func FuzzParseTokenizerJSON(f *testing.F) {
	f.Add([]byte(llama3Tokenizer))
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0},"merges":[["a","b"]]},"post_processor":{"type":"RobertaProcessing"}}`))
	f.Add([]byte(`{"model":{"type":"Unigram","vocab":[["a",0.0]]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tok, err := parseTokenizerJSON(data)
		if err != nil {
			return
		}
		// The post-processor and pre-tokenizer readers must cope with any shape of JSON.
		sv := &specialVocab{types: specialTypes}
		tok.postProcess(sv, jsonObject{"bos_token": "a", "eos_token": "b"})
		tok.postProcess(sv, nil)
		detectPre(tok.preTokenizer)
		tok.isLlamaHF()
	})
}
