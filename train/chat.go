package train

import (
	"fmt"
	"sort"
	"strings"
)

// A segment is a piece of a rendered training sample: text, or (id >= 0) one special token the template writes as
// bos_token or eos_token. scored says whether predicting its tokens counts toward the loss.
type segment struct {
	text   string
	id     int32
	scored bool
}

// message is one turn of a chat record.
type message struct {
	role, content string
}

// chatTemplate renders a conversation exactly as a known Jinja chat template does, without executing Jinja: lathe
// recognises a template by its content and reimplements it. Each renderer marks the assistant's content and its
// end-of-turn marker as scored, since they are what the model must learn to produce; headers and other turns are
// context. The line break a template writes after the end-of-turn marker is scored too: the scored piece then ends
// just before the next turn's control token, where tokenizing in pieces cannot differ from tokenizing the whole
// string (an end-of-turn token with llama.cpp's rstrip attribute, as Phi-3's <|end|>, swallows that line break only
// when both are in one piece).
type chatTemplate struct {
	name string
	// detect reports whether a model's Jinja template is this one; the markers are the template's own text.
	detect func(jinja string) bool
	render func(msgs []message, bos, eos int32) ([]segment, error)
}

// chatTemplates are the templates LoadStream renders, each cited to the model card's tokenizer_config.json whose
// chat_template it reproduces.
var chatTemplates = []chatTemplate{
	{"chatml", func(j string) bool { return strings.Contains(j, "<|im_start|>") }, renderChatML},
	{"llama2", func(j string) bool { return strings.Contains(j, "[INST]") && strings.Contains(j, "<<SYS>>") },
		renderLlama2},
	{"llama3", func(j string) bool { return strings.Contains(j, "<|start_header_id|>") }, renderLlama3},
	{"zephyr", func(j string) bool {
		return strings.Contains(j, "<|user|>") && strings.Contains(j, "eos_token") && !strings.Contains(j, "<|end|>")
	}, renderZephyr},
	{"gemma", func(j string) bool { return strings.Contains(j, "<start_of_turn>") }, renderGemma},
	{"phi3", func(j string) bool { return strings.Contains(j, "<|user|>") && strings.Contains(j, "<|end|>") },
		renderPhi3},
}

// ChatTemplateNames lists the chat templates LoadStream renders, in alphabetical order.
func ChatTemplateNames() []string {
	names := make([]string, len(chatTemplates))
	for i, t := range chatTemplates {
		names[i] = t.name
	}
	sort.Strings(names)
	return names
}

// findChatTemplate takes a template name or a model's Jinja template. Templates that take tools or insert a default
// system prompt (Qwen2's ChatML, Llama 3.1's dated system header) render differently from the plain form of their
// family, so they are not taken for it: naming the family is the explicit way to accept the plain rendering.
func findChatTemplate(spec string) (*chatTemplate, error) {
	known := strings.Join(ChatTemplateNames(), ", ")
	if spec == "" {
		return nil, fmt.Errorf("chat records need a chat template and the model has none; name one of: %s", known)
	}
	for i := range chatTemplates {
		if chatTemplates[i].name == spec {
			return &chatTemplates[i], nil
		}
	}
	if !strings.Contains(spec, "tools") && !strings.Contains(spec, "!= 'system'") &&
		!strings.Contains(spec, "Cutting Knowledge Date") {
		for i := range chatTemplates {
			if chatTemplates[i].detect(spec) {
				return &chatTemplates[i], nil
			}
		}
	}
	return nil, fmt.Errorf("the model's chat template is not one lathe renders (known: %s); name one of them to use "+
		"its rendering", known)
}

func prompt(s string) segment { return segment{text: s, id: -1} }
func reply(s string) segment  { return segment{text: s, id: -1, scored: true} }

// alternate checks the user/assistant alternation that the Llama 2 and Gemma templates enforce with
// raise_exception('Conversation roles must alternate user/assistant/user/assistant/...').
func alternate(msgs []message) error {
	for i, m := range msgs {
		if want := [2]string{"user", "assistant"}[i%2]; m.role != want {
			return fmt.Errorf("message %d is %q: roles must alternate user/assistant/user/assistant/...", i, m.role)
		}
	}
	return nil
}

// pyStrip is Python's str.strip() and Jinja's trim filter, which the templates apply to contents.
func pyStrip(s string) string { return strings.TrimSpace(s) }

// renderChatML follows the ChatML template as HuggingFaceTB/SmolLM-135M-Instruct ships it (also in
// ../shared/data/safetensors/smollm135m-medical-lora/tokenizer_config.json):
// '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' for every message.
func renderChatML(msgs []message, _, _ int32) ([]segment, error) {
	var s []segment
	for _, m := range msgs {
		s = append(s, prompt("<|im_start|>"+m.role+"\n"))
		if m.role == "assistant" {
			s = append(s, reply(m.content+"<|im_end|>\n"))
		} else {
			s = append(s, prompt(m.content+"<|im_end|>\n"))
		}
	}
	return s, nil
}

// renderLlama2 follows meta-llama/Llama-2-7b-chat-hf's tokenizer_config.json: an optional leading system message is
// folded into the first user turn as '<<SYS>>\n' + system + '\n<</SYS>>\n\n'; a user turn is
// bos_token + '[INST] ' + content.strip() + ' [/INST]' and an assistant turn ' ' + content.strip() + ' ' + eos_token.
func renderLlama2(msgs []message, bos, eos int32) ([]segment, error) {
	sys, hasSys := "", false
	if msgs[0].role == "system" {
		sys, hasSys, msgs = msgs[0].content, true, msgs[1:]
	}
	if err := alternate(msgs); err != nil {
		return nil, err
	}
	var s []segment
	for i, m := range msgs {
		c := m.content
		if i == 0 && hasSys {
			c = "<<SYS>>\n" + sys + "\n<</SYS>>\n\n" + c
		}
		if m.role == "user" {
			s = append(s, segment{id: bos}, prompt("[INST] "+pyStrip(c)+" [/INST]"))
		} else {
			s = append(s, reply(" "+pyStrip(c)+" "), segment{id: eos, scored: true})
		}
	}
	return s, nil
}

// renderLlama3 follows meta-llama/Meta-Llama-3-8B-Instruct's tokenizer_config.json: bos_token, then per message
// '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + content | trim + '<|eot_id|>'.
func renderLlama3(msgs []message, bos, _ int32) ([]segment, error) {
	s := []segment{{id: bos}}
	for _, m := range msgs {
		s = append(s, prompt("<|start_header_id|>"+m.role+"<|end_header_id|>\n\n"))
		body := segment{text: pyStrip(m.content) + "<|eot_id|>", id: -1, scored: m.role == "assistant"}
		s = append(s, body)
	}
	return s, nil
}

// renderZephyr follows HuggingFaceH4/zephyr-7b-beta's tokenizer_config.json (TinyLlama-1.1B-Chat uses the same):
// '<|' + role + '|>\n' + content + eos_token, each followed by the template's own line break.
func renderZephyr(msgs []message, _, eos int32) ([]segment, error) {
	var s []segment
	for _, m := range msgs {
		a := m.role == "assistant"
		s = append(s, prompt("<|"+m.role+"|>\n"), segment{text: m.content, id: -1, scored: a},
			segment{id: eos, scored: a}, segment{text: "\n", id: -1, scored: a})
	}
	return s, nil
}

// renderGemma follows google/gemma-7b-it's tokenizer_config.json: bos_token, no system role, alternating turns,
// '<start_of_turn>' + role + '\n' + content | trim + '<end_of_turn>\n' with the assistant's role written "model".
func renderGemma(msgs []message, bos, _ int32) ([]segment, error) {
	if msgs[0].role == "system" {
		return nil, fmt.Errorf("the gemma template does not support the system role")
	}
	if err := alternate(msgs); err != nil {
		return nil, err
	}
	s := []segment{{id: bos}}
	for _, m := range msgs {
		role, a := m.role, m.role == "assistant"
		if a {
			role = "model"
		}
		s = append(s, prompt("<start_of_turn>"+role+"\n"),
			segment{text: pyStrip(m.content) + "<end_of_turn>\n", id: -1, scored: a})
	}
	return s, nil
}

// renderPhi3 follows the Phi-3 template of llama.cpp's ggml-vocab-phi-3.gguf (../shared/data/gguf/llama.cpp-vocab):
// bos_token; a user turn '<|user|>\n' + content + '<|end|>\n<|assistant|>\n'; an assistant turn content +
// '<|end|>\n'. That template drops system messages without a trace, so they are an error here rather than lost.
func renderPhi3(msgs []message, bos, _ int32) ([]segment, error) {
	s := []segment{{id: bos}}
	for i, m := range msgs {
		switch m.role {
		case "system":
			return nil, fmt.Errorf("message %d: the phi3 template drops system messages", i)
		case "user":
			s = append(s, prompt("<|user|>\n"+m.content+"<|end|>\n<|assistant|>\n"))
		default:
			s = append(s, reply(m.content+"<|end|>\n"))
		}
	}
	return s, nil
}
