package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/lathe-ml/lathe/gguf"
	"github.com/lathe-ml/lathe/internal/testshared"
)

// Jinja chat templates as the models' tokenizer_config.json files hold them (after JSON decoding). They are data:
// the test checks that lathe recognises each one, and the expected renderings below are what each produces.
const (
	// meta-llama/Llama-2-7b-chat-hf, tokenizer_config.json chat_template.
	jinjaLlama2 = `{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}`
	// meta-llama/Meta-Llama-3-8B-Instruct, tokenizer_config.json chat_template.
	jinjaLlama3 = `{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}`
	// HuggingFaceH4/zephyr-7b-beta, tokenizer_config.json chat_template.
	jinjaZephyr = "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}"
	// google/gemma-7b-it, tokenizer_config.json chat_template.
	jinjaGemma = `{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}`
	// Qwen/Qwen1.5-72B: ChatML with a default system prompt, which the plain ChatML rendering lacks.
	jinjaQwen = `{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}`
	// mistralai/Mixtral-8x7B-Instruct-v0.1: [INST] without <<SYS>>, a different rendering from Llama 2's.
	jinjaMixtral = `{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}`
)

// sharedTemplates reads the two chat templates of real model files in ../shared: SmolLM's ChatML and Phi-3's.
func sharedTemplates(t *testing.T) (chatml, phi3 string) {
	t.Helper()
	cfg, err := os.ReadFile(testshared.Path(t, "data", "safetensors", "smollm135m-medical-lora", "tokenizer_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !jsonString(t, cfg, "chat_template", &chatml) {
		t.Fatal("smollm135m-medical-lora/tokenizer_config.json has no chat_template")
	}
	f, err := gguf.Open(testshared.Path(t, "data", "gguf", "llama.cpp-vocab", "ggml-vocab-phi-3.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if phi3, err = f.Metadata.String("tokenizer.chat_template"); err != nil {
		t.Fatal(err)
	}
	return chatml, phi3
}

func TestChatTemplateDetect(t *testing.T) {
	chatml, phi3 := sharedTemplates(t)
	for _, c := range []struct{ jinja, want string }{
		{chatml, "chatml"}, {phi3, "phi3"}, {jinjaLlama2, "llama2"}, {jinjaLlama3, "llama3"},
		{jinjaZephyr, "zephyr"}, {jinjaGemma, "gemma"}, {"gemma", "gemma"}, {"llama3", "llama3"},
		{jinjaQwen, ""}, {jinjaMixtral, ""}, {"{{ messages }}", ""}, {"", ""},
	} {
		tmpl, err := findChatTemplate(c.jinja)
		switch {
		case c.want == "" && err == nil:
			t.Errorf("%.40q: taken for %s, want not recognised", c.jinja, tmpl.name)
		case c.want == "" && !strings.Contains(err.Error(), "chatml, gemma, llama2, llama3, phi3, zephyr"):
			t.Errorf("%.40q: error %q does not list the known templates", c.jinja, err)
		case c.want != "" && err != nil:
			t.Errorf("%.40q: %v", c.jinja, err)
		case c.want != "" && tmpl.name != c.want:
			t.Errorf("%.40q: recognised as %s, want %s", c.jinja, tmpl.name, c.want)
		}
	}
}

// TestChatTemplateRender checks each renderer against the string its Jinja template produces for the same
// conversation (worked out by hand from the templates above; the Llama 2 and Llama 3 forms agree with the filled
// examples in LMFlow's docs/source/examples/supported_conversation_template.md), and which parts are scored.
func TestChatTemplateRender(t *testing.T) {
	sys := message{"system", "Be brief."}
	conv := []message{{"user", " What is 2+2? "}, {"assistant", "4.\n"}, {"user", "And 3+3?"}, {"assistant", "6."}}
	withSys := append([]message{sys}, conv...)
	cases := []struct {
		name   string
		msgs   []message
		want   string
		scored []string // the scored runs, in order
		err    string
	}{
		{"chatml", withSys,
			"<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n What is 2+2? <|im_end|>\n" +
				"<|im_start|>assistant\n4.\n<|im_end|>\n<|im_start|>user\nAnd 3+3?<|im_end|>\n" +
				"<|im_start|>assistant\n6.<|im_end|>\n",
			[]string{"4.\n<|im_end|>\n", "6.<|im_end|>\n"}, ""},
		{"llama2", withSys,
			"<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\n What is 2+2? [/INST] 4. </s><s>[INST] And 3+3? [/INST] 6. </s>",
			[]string{" 4. </s>", " 6. </s>"}, ""},
		{"llama2", conv, "<s>[INST] What is 2+2? [/INST] 4. </s><s>[INST] And 3+3? [/INST] 6. </s>",
			[]string{" 4. </s>", " 6. </s>"}, ""},
		{"llama3", withSys,
			"<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n4.<|eot_id|>" +
				"<|start_header_id|>user<|end_header_id|>\n\nAnd 3+3?<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n6.<|eot_id|>",
			[]string{"4.<|eot_id|>", "6.<|eot_id|>"}, ""},
		{"zephyr", withSys,
			"<|system|>\nBe brief.</s>\n<|user|>\n What is 2+2? </s>\n<|assistant|>\n4.\n</s>\n" +
				"<|user|>\nAnd 3+3?</s>\n<|assistant|>\n6.</s>\n",
			[]string{"4.\n</s>\n", "6.</s>\n"}, ""},
		{"gemma", conv,
			"<s><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n4.<end_of_turn>\n" +
				"<start_of_turn>user\nAnd 3+3?<end_of_turn>\n<start_of_turn>model\n6.<end_of_turn>\n",
			[]string{"4.<end_of_turn>\n", "6.<end_of_turn>\n"}, ""},
		{"phi3", conv,
			"<s><|user|>\n What is 2+2? <|end|>\n<|assistant|>\n4.\n<|end|>\n<|user|>\nAnd 3+3?<|end|>\n<|assistant|>\n" +
				"6.<|end|>\n",
			[]string{"4.\n<|end|>\n", "6.<|end|>\n"}, ""},
		{"gemma", withSys, "", nil, "does not support the system role"},
		{"phi3", withSys, "", nil, "drops system messages"},
		{"llama2", []message{{"user", "a"}, {"user", "b"}}, "", nil, "roles must alternate"},
		{"gemma", []message{{"assistant", "a"}}, "", nil, "roles must alternate"},
	}
	for _, c := range cases {
		tmpl, err := findChatTemplate(c.name)
		if err != nil {
			t.Fatal(err)
		}
		segs, err := tmpl.render(c.msgs, 1, 2)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var all strings.Builder
		var scored []string
		prev := false
		for _, s := range segs {
			text := s.text
			if s.id >= 0 {
				text = map[int32]string{1: "<s>", 2: "</s>"}[s.id]
			}
			all.WriteString(text)
			if s.scored {
				if prev {
					scored[len(scored)-1] += text
				} else {
					scored = append(scored, text)
				}
			}
			prev = s.scored
		}
		if all.String() != c.want {
			t.Errorf("%s: rendered\n%q\nwant\n%q", c.name, all.String(), c.want)
		}
		if strings.Join(scored, "|") != strings.Join(c.scored, "|") {
			t.Errorf("%s: scored %q, want %q", c.name, scored, c.scored)
		}
	}
}

// TestModelChatTemplate opens tiny-llama-a's checkpoint with SmolLM's tokenizer_config.json chat_template added and
// finds it in Model.ChatTemplate, as LoadStream's caller passes it on.
func TestModelChatTemplate(t *testing.T) {
	src := testshared.Path(t, "models", "tiny-llama-a", "hf")
	chatml, _ := sharedTemplates(t)
	dir := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors", "tokenizer.model", "special_tokens_map.json"} {
		if err := os.Symlink(filepath.Join(src, f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	cfg := `{"add_bos_token": true, "add_eos_token": false, "bos_token": "<s>", "eos_token": "</s>",
		"unk_token": "<unk>", "legacy": true, "tokenizer_class": "LlamaTokenizer", "chat_template": ` +
		jsonQuote(t, chatml) + `}`
	if err := os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.ChatTemplate != chatml {
		t.Fatalf("Model.ChatTemplate = %.60q, want SmolLM's template", m.ChatTemplate)
	}
	plain, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.ChatTemplate != "" {
		t.Errorf("tiny-llama-a has no chat template, got %.60q", plain.ChatTemplate)
	}
}
