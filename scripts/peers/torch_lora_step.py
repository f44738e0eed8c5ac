# The PyTorch peer of `lathe train`'s throughput (docs/BENCHMARKS.md, issue 11): the recorded recipe's step on
# a Hugging Face Llama directory -- LoRA r=8, alpha=16 on q,k,v,o,gate,up,down, AdamW lr 1e-3, batch 8 x 256,
# float32 -- written as plain PyTorch with transformers' Llama math (RMSNorm, rotate-half RoPE, GQA by
# repeat_interleave, causal softmax attention, SwiGLU), so that it needs nothing but torch and numpy.
#
#   OPENBLAS_CORETYPE=SkylakeX LD_LIBRARY_PATH=/usr/lib/x86_64-linux-gnu/openblas-openmp \
#     python3 scripts/peers/torch_lora_step.py MODEL_DIR [THREADS=2] [STEPS=20]
#
# Debian's python3-torch links the reference BLAS unless LD_LIBRARY_PATH points at OpenBLAS, and that OpenBLAS
# takes this VM's CPU for a Prescott unless OPENBLAS_CORETYPE says otherwise (docs/kernels.md). Batches are
# random tokens: the step's cost does not depend on them. Prints one JSON object: the median step time over the
# steps after the first two, tokens/s, and the peak RSS of the process.
import json, math, resource, struct, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
d = sys.argv[1]
cfg = json.load(open(d + "/config.json"))
raw = open(d + "/model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]; hdr = json.loads(raw[8:8+n]); base = 8+n
W = {k: torch.from_numpy(np.frombuffer(raw[base+v["data_offsets"][0]:base+v["data_offsets"][1]], dtype=np.float32).reshape(v["shape"]).copy())
     for k, v in hdr.items() if k != "__metadata__"}
H, L, nh, nkv = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = H // nh; eps = cfg["rms_norm_eps"]; theta = cfg.get("rope_theta", 10000.0)
B, T, r, alpha = 8, 256, 8, 16.0
torch.manual_seed(42)
lora = {}
for i in range(L):
    for m in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]:
        w = W[f"model.layers.{i}.{m}.weight"]
        a = torch.empty(r, w.shape[1]); torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        lora[f"{i}.{m}"] = (a.requires_grad_(), torch.zeros(w.shape[0], r, requires_grad=True))
params = [p for ab in lora.values() for p in ab]
opt = torch.optim.AdamW(params, lr=1e-3)
inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
ang = torch.outer(torch.arange(T).float(), inv); emb = torch.cat([ang, ang], -1); cos, sin = emb.cos(), emb.sin()
def rot(x): x1, x2 = x[..., :hd//2], x[..., hd//2:]; return torch.cat([-x2, x1], -1)
def rms(x, w): return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
def lin(x, i, m):
    a, b = lora[f"{i}.{m}"]
    return x @ W[f"model.layers.{i}.{m}.weight"].t() + (alpha / r) * ((x @ a.t()) @ b.t())
mask = torch.full((T, T), float("-inf")).triu(1)
def loss_fn(tok):
    x = W["model.embed_tokens.weight"][tok[:, :-1]]
    for i in range(L):
        h = rms(x, W[f"model.layers.{i}.input_layernorm.weight"])
        q = lin(h, i, "self_attn.q_proj").view(B, T, nh, hd).transpose(1, 2)
        k = lin(h, i, "self_attn.k_proj").view(B, T, nkv, hd).transpose(1, 2)
        v = lin(h, i, "self_attn.v_proj").view(B, T, nkv, hd).transpose(1, 2)
        q, k = q * cos + rot(q) * sin, k * cos + rot(k) * sin
        k = k.repeat_interleave(nh // nkv, 1); v = v.repeat_interleave(nh // nkv, 1)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + mask, -1) @ v
        x = x + lin(att.transpose(1, 2).reshape(B, T, H), i, "self_attn.o_proj")
        h = rms(x, W[f"model.layers.{i}.post_attention_layernorm.weight"])
        x = x + lin(torch.nn.functional.silu(lin(h, i, "mlp.gate_proj")) * lin(h, i, "mlp.up_proj"), i, "mlp.down_proj")
    logits = rms(x, W["model.norm.weight"]) @ W["lm_head.weight"].t()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tok[:, 1:].reshape(-1))
g = torch.Generator().manual_seed(0)
times = []
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
for s in range(steps):
    tok = torch.randint(0, cfg["vocab_size"], (B, T + 1), generator=g)
    t0 = time.perf_counter()
    loss = loss_fn(tok); opt.zero_grad(); loss.backward(); opt.step()
    times.append(time.perf_counter() - t0)
times = sorted(times[2:])
med = times[len(times)//2]
print(json.dumps({"median_step_s": med, "tokens_per_s": B*T/med, "steps": steps, "threads": torch.get_num_threads(),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "loss": loss.item()}))
