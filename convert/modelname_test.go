package convert

import "testing"

// Cases from gguf-py's tests/test_metadata.py (the peer's own expectations for get_model_id_components and
// id_to_title); an empty field stands for Python's None.
func TestParseModelIDMatchesGGUFPy(t *testing.T) {
	for _, tc := range []struct {
		id    string
		total int64
		want  modelID
	}{
		{"Mistral/Mixtral-8x7B-Instruct-v0.1", 0, modelID{"Mixtral-8x7B-Instruct-v0.1", "Mistral", "Mixtral", "Instruct", "v0.1", "8x7B"}},
		{"Mixtral-8x7B-Instruct-v0.1", 0, modelID{"Mixtral-8x7B-Instruct-v0.1", "", "Mixtral", "Instruct", "v0.1", "8x7B"}},
		{"Mixtral-8x7B-Instruct", 0, modelID{"Mixtral-8x7B-Instruct", "", "Mixtral", "Instruct", "", "8x7B"}},
		{"Mixtral-8x7B-v0.1", 0, modelID{"Mixtral-8x7B-v0.1", "", "Mixtral", "", "v0.1", "8x7B"}},
		{"Mixtral-8x7B", 0, modelID{"Mixtral-8x7B", "", "Mixtral", "", "", "8x7B"}},
		{"Mixtral-v0.1", 0, modelID{"Mixtral-v0.1", "", "Mixtral", "", "v0.1", ""}},
		{"Mixtral", 0, modelID{"Mixtral", "", "", "", "", ""}},
		{"NousResearch/Meta-Llama-3-8B", 0, modelID{"Meta-Llama-3-8B", "NousResearch", "Meta-Llama-3", "", "", "8B"}},
		{"Qwen1.5-MoE-A2.7B-Chat", 0, modelID{"Qwen1.5-MoE-A2.7B-Chat", "", "Qwen1.5-MoE", "Chat", "", "A2.7B"}},
		{"Qwen2-57B-A14B-Instruct", 0, modelID{"Qwen2-57B-A14B-Instruct", "", "Qwen2", "Instruct", "", "57B-A14B"}},
		{"google/gemma-4-26B-A4B-it", 4e9, modelID{"gemma-4-26B-A4B-it", "google", "gemma-4", "it", "", "26B-A4B"}},
		{"microsoft/Phi-3-mini-4k-instruct", 4e9, modelID{"Phi-3-mini-4k-instruct", "microsoft", "Phi-3", "4k-instruct", "", "mini"}},
		{"delphi-suite/stories-llama2-50k", 50e3, modelID{"stories-llama2-50k", "delphi-suite", "stories-llama2", "", "", "50K"}},
		{"DeepSeek-Coder-V2-Lite-Instruct", 0, modelID{"DeepSeek-Coder-V2-Lite-Instruct", "", "DeepSeek-Coder-V2-Lite", "Instruct", "", ""}},
		{"crestf411/daybreak-kunoichi-2dpo-7b", 0, modelID{"daybreak-kunoichi-2dpo-7b", "crestf411", "daybreak-kunoichi", "2dpo", "", "7B"}},
		{"Qwen2-0.5B-Instruct", 0, modelID{"Qwen2-0.5B-Instruct", "", "Qwen2", "Instruct", "", "0.5B"}},
		{"smallcloudai/Refact-1_6B-fim", 0, modelID{"Refact-1_6B-fim", "smallcloudai", "Refact", "fim", "", "1.6B"}},
		{"UCLA-AGI/Gemma-2-9B-It-SPPO-Iter3", 0, modelID{"Gemma-2-9B-It-SPPO-Iter3", "UCLA-AGI", "Gemma-2", "It-SPPO", "Iter3", "9B"}},
		{"NousResearch/Hermes-2-Theta-Llama-3-8B", 0, modelID{"Hermes-2-Theta-Llama-3-8B", "NousResearch", "Hermes-2-Theta-Llama-3", "", "", "8B"}},
		{"SeaLLMs/SeaLLMs-v3-7B-Chat", 0, modelID{"SeaLLMs-v3-7B-Chat", "SeaLLMs", "SeaLLMs-v3", "Chat", "", "7B"}},
		{"internlm/internlm2_5-7b-chat-1m", 7e9, modelID{"internlm2_5-7b-chat-1m", "internlm", "internlm2_5", "chat-1m", "", "7B"}},
		{"pszemraj/jamba-900M-v0.13-KIx2", 0, modelID{"jamba-900M-v0.13-KIx2", "pszemraj", "jamba", "KIx2", "v0.13", "900M"}},
		{"state-spaces/mamba-2.8b-hf", 0, modelID{"mamba-2.8b-hf", "state-spaces", "mamba", "hf", "", "2.8B"}},
		{"abacaj/llama-161M-100B", 161e6, modelID{"llama-161M-100B", "abacaj", "llama", "100b", "", "161M"}},
		{"SparseLLM/relu-100B", 1340e6, modelID{"relu-100B", "SparseLLM", "relu", "100b", "", ""}},
		{"bigscience/bloom-7b1-petals", 0, modelID{"bloom-7b1-petals", "bigscience", "bloom", "petals", "", "7.1B"}},
		{"MaziyarPanahi/GreenNode-mini-7B-multilingual-v1olet-Mistral-7B-Instruct-v0.1", 0, modelID{"GreenNode-mini-7B-multilingual-v1olet-Mistral-7B-Instruct-v0.1", "MaziyarPanahi", "GreenNode-mini", "multilingual-v1olet-Mistral-Instruct", "v0.1", "7B"}},
		{"mistralai/Mistral-Nemo-Instruct-2407", 0, modelID{"Mistral-Nemo-Instruct-2407", "mistralai", "Mistral-Nemo", "Instruct", "2407", ""}},
		{"deepseek-ai/DeepSeek-V2-Chat-0628", 0, modelID{"DeepSeek-V2-Chat-0628", "deepseek-ai", "DeepSeek-V2", "Chat", "0628", ""}},
		{"OpenGVLab/Mini-InternVL-Chat-2B-V1-5", 0, modelID{"Mini-InternVL-Chat-2B-V1-5", "OpenGVLab", "Mini-InternVL", "Chat", "V1-5", "2B"}},
		{"jondurbin/bagel-dpo-2.8b-v0.2", 0, modelID{"bagel-dpo-2.8b-v0.2", "jondurbin", "bagel-dpo", "", "v0.2", "2.8B"}},
		{"voxmenthe/SFR-Iterative-DPO-LLaMA-3-8B-R-unquantized", 0, modelID{"SFR-Iterative-DPO-LLaMA-3-8B-R-unquantized", "voxmenthe", "SFR-Iterative-DPO-LLaMA-3", "R-unquantized", "", "8B"}},
		{"microsoft/Florence-2-base", 0, modelID{"Florence-2-base", "microsoft", "", "", "", ""}},
		{"mistralai/-Mistral--Nemo-Base-2407-", 0, modelID{"-Mistral--Nemo-Base-2407-", "mistralai", "Mistral-Nemo-Base", "", "2407", ""}},
		{"Llama-3-Instruct-abliteration-LoRA-8B", 0, modelID{"Llama-3-Instruct-abliteration-LoRA-8B", "", "Llama-3", "Instruct-abliteration-LoRA", "", "8B"}},
		{"Llama-3-Instruct-abliteration-LoRA-8B", -1234, modelID{"Llama-3-Instruct-abliteration-LoRA-8B", "", "Llama-3", "Instruct-abliteration", "", "8B"}},
		{"./hermes-2-pro-llama-3-8b-DPO", 0, modelID{"hermes-2-pro-llama-3-8b-DPO", "", "hermes-2-pro-llama-3", "DPO", "", "8B"}},
		{"a b/c", 0, modelID{name: "a b/c"}},
	} {
		if got := parseModelID(tc.id, tc.total); got != tc.want {
			t.Errorf("parseModelID(%q, %d) = %+v\nwant %+v", tc.id, tc.total, got, tc.want)
		}
	}
}

func TestIDToTitle(t *testing.T) {
	for id, want := range map[string]string{
		"Mixtral-8x7B-Instruct-v0.1":  "Mixtral 8x7B Instruct v0.1",
		"Meta-Llama-3-8B":             "Meta Llama 3 8B",
		"hermes-2-pro-llama-3-8b-DPO": "Hermes 2 Pro Llama 3 8b DPO",
		"tiny-llama-a":                "Tiny Llama A",
		"gpt2x-small":                 "Gpt2X Small",
	} {
		if got := idToTitle(id); got != want {
			t.Errorf("idToTitle(%q) = %q, want %q", id, got, want)
		}
	}
}

// Expected labels follow utility.model_weight_count_rounded_notation: at least two significant digits, Python's
// round-half-even for the digit count.
func TestSizeLabel(t *testing.T) {
	for n, want := range map[int64]string{
		5246208:           "5.2M", // tiny-llama-a, as in its GGUF
		134515008:         "135M",
		500:               "0.50K",
		1_000_000:         "1.0M",
		7_241_732_096:     "7.2B",
		70_553_706_496:    "71B",
		1_500_000_000_000: "1.5T",
		-2_000_000:        "2.0M",
	} {
		if got := sizeLabel(n); got != want {
			t.Errorf("sizeLabel(%d) = %q, want %q", n, got, want)
		}
	}
}
