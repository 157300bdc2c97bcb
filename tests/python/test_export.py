"""`workbench export` and `[init] from`, checked from Python (run by ctest).

1. A tiny dense ViT and a tiny V-MoE train for a few steps; `workbench export --samples`
   writes their backbones and a few test images with the workbench's CLS features. A plain
   PyTorch ViT written here in timm's layout (no timm package) loads each file (torch.load
   with weights_only=True, and safetensors through the reader below, written from the format's
   description) and reproduces the features to 1e-5.
2. The reverse: Python writes timm-layout state dicts (torch.save of a state_dict(), and a
   safetensors file written by hand), runs start from them with [init] and epochs = 0, and the
   workbench's features equal Python's. A source with an unexpected weight fails its point
   unless init.allow_unexpected allows it.

usage: test_export.py WORKBENCH_EXE
"""

import json
import pathlib
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TOLERANCE = 1e-5

# ---- safetensors, from the format's description (Debian 12 has no python3-safetensors) ----

DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
          "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    metadata = header.pop("__metadata__", {})
    out, covered = {}, 0
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        array = np.frombuffer(body[begin:end], dtype=dtype)
        out[name] = torch.from_numpy(array.reshape(entry["shape"]).copy())
        covered += end - begin
    assert covered == len(body), "the tensors do not tile the data section"
    return out, metadata


def write_safetensors(path, tensors):
    header, chunks, offset = {}, [], 0
    names = {torch.float32: "F32", torch.int64: "I64"}
    for name, t in tensors.items():
        raw = t.detach().contiguous().numpy().astype("<" + t.numpy().dtype.str[1:]).tobytes()
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


# ---- a plain PyTorch ViT in timm's VisionTransformer layout, MoE blocks as docs/export.md ----

class PatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, patch, stride=patch)


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class StackedLinear(nn.Module):
    """E nn.Linear layers in one tensor: weight [E, out, in], bias [E, out]."""

    def __init__(self, experts, d_in, d_out):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(experts, d_out, d_in) * d_in ** -0.5)
        self.bias = nn.Parameter(torch.randn(experts, d_out) * 0.1)


class MoeMlp(nn.Module):
    """Top-k routing as the noisy_topk gate does at evaluation: softmax over W x (no noise, no
    capacity), the k most probable experts, outputs weighted by those probabilities."""

    def __init__(self, dim, hidden, experts, k):
        super().__init__()
        self.k = k
        self.gate = nn.Linear(dim, experts, bias=False)
        self.experts = nn.Module()
        self.experts.fc1 = StackedLinear(experts, dim, hidden)
        self.experts.fc2 = StackedLinear(experts, hidden, dim)

    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = self.gate(x).softmax(-1)
        top_p, top_e = probs.topk(self.k, dim=-1)
        e1, e2 = self.experts.fc1, self.experts.fc2
        h = F.gelu(torch.einsum("td,ehd->teh", x, e1.weight) + e1.bias)
        every = torch.einsum("teh,edh->ted", h, e2.weight) + e2.bias  # [T, E, D]
        chosen = every.gather(1, top_e.unsqueeze(-1).expand(-1, -1, shape[-1]))
        return (chosen * top_p.unsqueeze(-1)).sum(1).reshape(shape)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = mlp

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    def __init__(self, arch):
        super().__init__()
        dim, grid = arch["embed_dim"], arch["image_size"] // arch["patch_size"]
        self.patch_embed = PatchEmbed(arch["channels"], dim, arch["patch_size"])
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        moe = arch["moe"] or {"blocks": []}
        k = (moe.get("gate") or {}).get("params", {}).get("k", 1)
        self.blocks = nn.ModuleList(
            Block(dim, arch["num_heads"],
                  MoeMlp(dim, moe["expert_hidden"], moe["experts"], k) if i in moe["blocks"]
                  else Mlp(dim, arch["mlp_hidden"]))
            for i in range(arch["depth"]))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, images):
        x = self.patch_embed.proj(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 0]


# ---- the workbench ----------------------------------------------------------------------

BASE = """
[base]
threads = 1
workers = 0
[base.data]
dataset = "fashion_mnist"
train_limit = 128
test_limit = 32
[base.backbone]
plugin = "vit"
patch = 7
dim = 16
depth = 2
heads = 2
[base.gate]
plugin = "noisy_topk"
k = 2
[[base.losses]]
plugin = "classify"
[base.train]
batch = 32
warmup_epochs = 0
log_every = 1
"""


def workbench(exe, *args):
    result = subprocess.run([exe, *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"workbench {' '.join(map(str, args))} failed "
                             f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def points(runs, experiment):
    """{label: point directory} of an experiment."""
    out = {}
    for d in sorted((runs / experiment).iterdir()):
        if (d / "point.toml").is_file():
            lines = (d / "point.toml").read_text().splitlines()
            label = next(line for line in lines if line.startswith("label"))
            out[label.split("=", 1)[1].strip().strip('"')] = d
    return out


def max_difference(a, b):
    return (a - b).abs().max().item()


def check_features(model, samples, what):
    model.eval()
    with torch.no_grad():
        ours = model(samples["images"])
    diff = max_difference(ours, samples["cls"])
    print(f"  {what}: max |python - workbench| = {diff:.2e} over {tuple(ours.shape)}")
    assert diff <= TOLERANCE, f"{what}: features differ by {diff}"


def test_export(exe, scratch):
    runs = scratch / "runs"
    (scratch / "export.toml").write_text(
        '[experiment]\nname = "export"\nseeds = [0]\n' + BASE + """steps = 3

[[point]]
"backbone.experts" = 4
"backbone.moe_every" = 2
losses = [ { plugin = "moco" } ]
""")
    workbench(exe, "run", scratch / "export.toml", "--runs-dir", runs)
    found = points(runs, "export")
    dense = next(d for label, d in found.items() if "experts" not in label)
    vmoe = next(d for label, d in found.items() if "experts" in label)
    archs = {}
    for name, run, extra in (("dense ViT", dense, []), ("V-MoE", vmoe, ["--momentum", "--heads"])):
        print(name)
        workbench(exe, "export", run, "--samples", 6, *extra)
        out = run / "export"
        info = json.loads((out / "backbone.json").read_text())
        assert info["naming"] == "timm", info["naming"]
        arch = info["architecture"]
        archs[name] = (arch, info)
        from_pt = torch.load(out / "backbone.pt", weights_only=True)
        from_st, metadata = read_safetensors(out / "backbone.safetensors")
        assert type(from_pt) is dict, type(from_pt)
        assert list(from_pt) == list(from_st), "the two files list different weights"
        for key in from_pt:
            assert torch.equal(from_pt[key], from_st[key]), key
        assert json.loads(metadata["architecture"]) == arch
        samples = torch.load(out / "samples.pt", weights_only=True)
        assert samples["images"].shape[0] == 6
        for weights, file in ((from_pt, "backbone.pt"), (from_st, "backbone.safetensors")):
            model = VisionTransformer(arch)
            model.load_state_dict(weights, strict=True)  # every name and shape as documented
            check_features(model, samples, file)
    arch, info = archs["V-MoE"]
    assert arch["moe"]["blocks"] == [1] and arch["moe"]["experts"] == 4, arch["moe"]
    assert "blocks.1.mlp.experts.fc1.weight" in info["names"]
    assert info["timm_kwargs"] is None  # timm has no MoE block
    dense_arch, dense_info = archs["dense ViT"]
    assert dense_info["timm_kwargs"]["embed_dim"] == 16 and dense_info["timm_kwargs"]["depth"] == 2
    momentum = torch.load(vmoe / "export" / "momentum.pt", weights_only=True)
    VisionTransformer(arch).load_state_dict(momentum, strict=True)
    heads = torch.load(vmoe / "export" / "heads.pt", weights_only=True)
    assert heads and all(k.startswith("losses.moco.") for k in heads), list(heads)[:3]
    return dense_arch, arch


def random_model(arch, seed):
    torch.manual_seed(seed)
    model = VisionTransformer(arch)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)  # LayerNorm and bias values away from 1 and 0
    return model


def test_init(exe, scratch, dense_arch, moe_arch):
    dense_model, moe_model = random_model(dense_arch, 1), random_model(moe_arch, 2)
    state = dense_model.state_dict()  # an OrderedDict with _metadata, as torch.save sees it
    state["head.weight"] = torch.zeros(10, 16)
    torch.save(state, scratch / "dense.pt")
    write_safetensors(scratch / "moe.safetensors", moe_model.state_dict())
    runs = scratch / "runs"
    (scratch / "init.toml").write_text(
        '[experiment]\nname = "init"\nseeds = [0]\n' + BASE + f"""epochs = 0
[base.init]
from = "{scratch / 'dense.pt'}"
allow_unexpected = ["head.*"]

[[point]]
"backbone.experts" = 4
"backbone.moe_every" = 2
"init.from" = "{scratch / 'moe.safetensors'}"

[[point]]
"init.allow_unexpected" = []
""")
    result = subprocess.run([exe, "run", scratch / "init.toml", "--runs-dir", runs],
                            capture_output=True, text=True)
    assert result.returncode == 1, "the point with a refused init must fail"
    found = points(runs, "init")
    refused = next(d for label, d in found.items() if "allow_unexpected" in label)
    status = (refused / "status.toml").read_text()
    assert 'state = "failed"' in status and "head.weight" in status, status
    for label, d in found.items():
        if d == refused:
            continue
        moe = "experts" in label
        print("init from", "moe.safetensors" if moe else "dense.pt")
        workbench(exe, "export", d, "--samples", 6)
        samples = torch.load(d / "export" / "samples.pt", weights_only=True)
        check_features(moe_model if moe else dense_model, samples, "workbench after [init]")


def main():
    exe = sys.argv[1]
    torch.set_num_threads(1)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="wb_export_"))
    try:
        dense_arch, moe_arch = test_export(exe, scratch)
        test_init(exe, scratch, dense_arch, moe_arch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print("2 passed, 0 failed")


if __name__ == "__main__":
    main()
