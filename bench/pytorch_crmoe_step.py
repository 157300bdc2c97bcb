#!/usr/bin/python3
"""One CR-MoE training step in plain PyTorch, for `bench/crmoe_step_vs_pytorch.sh`.

The same step as `workbench bench step --config bench/crmoe_step.toml`:
- V-MoE backbone as the workbench `vit` plugin: conv patch embedding (frozen: MoCo v3's random
  patch projection), CLS token, fixed 2-D sin-cos positions, pre-norm blocks (LayerNorm eps
  1e-6, qkv with bias, GELU), final norm; every other block (1, 3, 5) a MoE layer of 16 experts,
  top-2, expert hidden 2 x dim;
- noisy top-k gate (V-MoE): logits W x, N(0, (1/E)^2) noise in training, softmax, top-k, combine
  weights = the probabilities (not renormalised), importance and load losses;
- MoE dispatch by sorting the (token, choice) assignments by expert and running one matrix
  product per expert, then index_add back;
- MoCo v3: projector (3 layers) and predictor (2 layers) with BN, momentum encoder (backbone +
  projector) updated by EMA before the key forward, ctr(q1, k2) + ctr(q2, k1), tau 0.2;
- load balance 0.01 x sum over layers of the view-mean of (importance + load);
- OGAR 0.001 x sum over layers of (1 - 0.3) L_CLS + 0.3 L_patch on sparse gate vectors, overlap
  matching (IoU > 0.2) from the views' crop boxes and flips, both directions;
- AdamW (lr 5e-4 x batch / 256, weight decay 0.1).
Inputs are random images with MoCo-like random crop boxes and flips. Prints one line: images/s
(batch / median step time). With --device cuda the step runs on the GPU (and prints its peak
memory on a second line); --precision bf16 runs the forwards and losses under bf16 autocast, the
gate logits and contrastive logits in fp32, as `train.precision = "bf16"` does.
"""
import argparse
import copy
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def sincos_2d(dim, grid):
    # The workbench layout: patch (r, c) gets [sin(r w), cos(r w), sin(c w), cos(c w)].
    q = dim // 4
    omega = 10000.0 ** (-torch.arange(q, dtype=torch.float64) / q)
    coord = torch.arange(grid, dtype=torch.float64)
    row = coord.repeat_interleave(grid)[:, None] * omega[None]
    col = coord.repeat(grid)[:, None] * omega[None]
    pe = torch.cat([row.sin(), row.cos(), col.sin(), col.cos()], 1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), pe], 0).float()[None]


def squared_cv(v):
    m = v.mean()
    return (v - m).pow(2).mean() / m.pow(2)


class MoE(nn.Module):
    def __init__(self, dim, hidden, experts, k):
        super().__init__()
        self.e, self.k = experts, k
        self.gate = nn.Parameter(torch.randn(experts, dim) / math.sqrt(dim))
        b1, b2 = math.sqrt(6 / (dim + hidden)), math.sqrt(6 / (hidden + dim))
        self.w1 = nn.Parameter(torch.empty(experts, dim, hidden).uniform_(-b1, b1))
        self.b1 = nn.Parameter(torch.zeros(experts, hidden))
        self.w2 = nn.Parameter(torch.empty(experts, hidden, dim).uniform_(-b2, b2))
        self.b2 = nn.Parameter(torch.zeros(experts, dim))

    def forward(self, x):
        b, n, d = x.shape
        t = x.reshape(b * n, d)
        sigma = 1.0 / self.e
        logits = (t @ self.gate.t()).float()
        noisy = logits + torch.randn_like(logits) * sigma
        probs = noisy.softmax(1)
        top_p, top_e = probs.topk(self.k, 1)
        gates = torch.zeros_like(probs).scatter(1, top_e, top_p)
        importance = squared_cv(probs.sum(0))
        thr = noisy.topk(self.k, 1)[0][:, -1:]
        load = squared_cv((0.5 * torch.erfc((thr - logits) / sigma / math.sqrt(2))).mean(0))
        # Dispatch: assignments sorted by expert, one product per expert, index_add back.
        flat_e = top_e.reshape(-1)
        order = torch.argsort(flat_e)
        token = order // self.k
        counts = torch.bincount(flat_e, minlength=self.e).tolist()
        xs = t[token]
        outs, start = [], 0
        for e, c in enumerate(counts):
            if c:
                h = F.gelu(xs[start:start + c] @ self.w1[e] + self.b1[e])
                outs.append(h @ self.w2[e] + self.b2[e])
                start += c
        ys = torch.cat(outs) * top_p.reshape(-1)[order, None]
        y = torch.zeros_like(t).index_add_(0, token, ys)
        return y.view(b, n, d), gates, (importance, load)


class Block(nn.Module):
    def __init__(self, dim, heads, hidden, moe=None):
        super().__init__()
        self.n1 = nn.LayerNorm(dim, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.n2 = nn.LayerNorm(dim, eps=1e-6)
        self.moe = moe
        if moe is None:
            self.fc1 = nn.Linear(dim, hidden)
            self.fc2 = nn.Linear(hidden, dim)
        self.heads = heads

    def forward(self, x, routings):
        b, n, d = x.shape
        qkv = self.qkv(self.n1(x)).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q * (d // self.heads) ** -0.5) @ k.transpose(-2, -1)
        x = x + self.proj((a.softmax(-1) @ v).transpose(1, 2).reshape(b, n, d))
        h = self.n2(x)
        if self.moe is None:
            return x + self.fc2(F.gelu(self.fc1(h)))
        y, gates, aux = self.moe(h)
        routings.append((gates, aux))
        return x + y


class VMoE(nn.Module):
    def __init__(self, image, patch, channels, dim, depth, heads, experts, k, expert_hidden):
        super().__init__()
        self.embed = nn.Conv2d(channels, dim, patch, patch)
        self.embed.requires_grad_(False)  # random patch projection
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 1e-6)
        self.register_buffer("pos", sincos_2d(dim, image // patch))
        self.blocks = nn.ModuleList([
            Block(dim, heads, 4 * dim, MoE(dim, expert_hidden, experts, k) if i % 2 == 1 else None)
            for i in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        routings = []
        for blk in self.blocks:
            x = blk(x, routings)
        return self.norm(x)[:, 0], routings


def mlp(layers, din, hidden, dout):
    mods = []
    for i in range(layers):
        a, b = din if i == 0 else hidden, dout if i == layers - 1 else hidden
        mods.append(nn.Linear(a, b, bias=False))
        if i < layers - 1:
            mods += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        else:
            mods.append(nn.BatchNorm1d(b, affine=False))
    return nn.Sequential(*mods)


def ctr(q, k, tau):
    logits = (F.normalize(q, dim=1) @ F.normalize(k, dim=1).t()).float() / tau
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device)) * 2 * tau


def patch_boxes(box, flip, g):
    p = torch.arange(g * g, device=box.device)
    col, row = (p % g).float()[None], (p // g).float()[None]
    src = torch.where(flip[:, None], g - 1 - col, col)
    x, y, w, h = box.unbind(1)
    return torch.stack([x[:, None] + src / g * w[:, None], y[:, None] + row / g * h[:, None],
                        (w / g)[:, None].expand(-1, g * g), (h / g)[:, None].expand(-1, g * g)], 2)


def overlap_match(qv, kv, g, lam):
    a, b = patch_boxes(*qv, g), patch_boxes(*kv, g)
    ax0, ay0, aw, ah = [t[:, :, None] for t in a.unbind(2)]
    bx0, by0, bw, bh = [t[:, None, :] for t in b.unbind(2)]
    iw = (torch.minimum(ax0 + aw, bx0 + bw) - torch.maximum(ax0, bx0)).clamp_min(0)
    ih = (torch.minimum(ay0 + ah, by0 + bh) - torch.maximum(ay0, by0)).clamp_min(0)
    inter = iw * ih
    iou = inter / (aw * ah + bw * bh - inter).clamp_min(1e-12)
    best, idx = iou.max(2)
    return idx, best > lam


def ogar_direction(gq, gk, match, tau):
    b, t, e = gq.shape
    n = t - 1
    q = F.normalize(gq, dim=2)
    k = F.normalize(gk, dim=2).detach()
    own = torch.arange(b, device=gq.device)
    cls = F.cross_entropy((q[:, 0] @ k[:, 0].t()).float() / tau, own) * 2 * tau
    idx, valid = match
    km = k[:, 1:].gather(1, idx[:, :, None].expand(b, n, e))
    logits = torch.bmm(q[:, 1:].transpose(0, 1), km.permute(1, 2, 0)).float() / tau  # [N, B, B]
    pos = logits.log_softmax(2).gather(2, own.view(1, b, 1).expand(n, b, 1)).squeeze(2).t()
    nll = torch.where(valid, -pos, torch.zeros_like(pos))
    patch = nll.sum() / valid.sum().clamp_min(1) * 2 * tau
    return cls, patch


def random_boxes(batch, gen):
    boxes = torch.zeros(batch, 4)
    for i in range(batch):
        for _ in range(10):
            area = 0.08 + 0.92 * torch.rand(1, generator=gen).item()
            lr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(1, generator=gen).item()
            w, h = math.sqrt(area * math.exp(lr)), math.sqrt(area / math.exp(lr))
            if w <= 1 and h <= 1:
                boxes[i] = torch.tensor([(1 - w) * torch.rand(1, generator=gen).item(),
                                         (1 - h) * torch.rand(1, generator=gen).item(), w, h])
                break
        else:
            boxes[i] = torch.tensor([0, 0, 1, 1])
    return boxes, torch.rand(batch, generator=gen) < 0.5


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--image", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--patch", type=int, default=4)
    p.add_argument("--dim", type=int, default=192)
    p.add_argument("--depth", type=int, default=6)
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--experts", type=int, default=16)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--expert-hidden", type=int, default=384)
    p.add_argument("--hidden", type=int, default=512, help="MoCo projector / predictor hidden")
    p.add_argument("--out", type=int, default=128, help="MoCo output width")
    p.add_argument("--no-ogar", action="store_true", help="leave the OGAR loss out")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    a = p.parse_args()
    dev = torch.device(a.device)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tau, m0, alpha, lam, w_lb, w_g = 0.2, 0.99, 0.3, 0.2, 0.01, 0.001
    g = a.image // a.patch

    backbone = VMoE(a.image, a.patch, a.channels, a.dim, a.depth, a.heads, a.experts, a.k,
                    a.expert_hidden)
    projector = mlp(3, a.dim, a.hidden, a.out)
    predictor = mlp(2, a.out, a.hidden, a.out)
    backbone, projector, predictor = backbone.to(dev), projector.to(dev), predictor.to(dev)
    m_backbone, m_projector = copy.deepcopy(backbone), copy.deepcopy(projector)
    for q in list(m_backbone.parameters()) + list(m_projector.parameters()):
        q.requires_grad_(False)
    online = [q for q in list(backbone.parameters()) + list(projector.parameters()) +
              list(predictor.parameters()) if q.requires_grad]
    opt = torch.optim.AdamW(online, lr=5e-4 * a.batch / 256, weight_decay=0.1)
    pairs = list(zip(list(backbone.parameters()) + list(projector.parameters()),
                     list(m_backbone.parameters()) + list(m_projector.parameters())))

    gen = torch.Generator().manual_seed(1234)
    views = [torch.randn(a.batch, a.channels, a.image, a.image, generator=gen) for _ in range(2)]
    geo = [random_boxes(a.batch, gen) for _ in range(2)]
    views = [v.to(dev) for v in views]
    geo = [(box.to(dev), flip.to(dev)) for box, flip in geo]
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    total = a.warmup + a.steps + 1
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        m = 1 - 0.5 * (1 + math.cos(math.pi * i / total)) * (1 - m0)
        with torch.no_grad():
            for po, pm in pairs:
                pm.mul_(m).add_(po, alpha=1 - m)
        with autocast:
            feats, routs = zip(*[backbone(v) for v in views])
            with torch.no_grad():
                mfeats, mrouts = zip(*[m_backbone(v) for v in views])
                k1, k2 = [m_projector(f) for f in mfeats]
            q1, q2 = [predictor(projector(f)) for f in feats]
            loss = ctr(q1, k2, tau) + ctr(q2, k1, tau)
            layers = len(routs[0])
            lb = sum((routs[0][l][1][0] + routs[0][l][1][1] + routs[1][l][1][0] +
                      routs[1][l][1][1]) / 2 for l in range(layers))
            loss = loss + w_lb * lb
            if not a.no_ogar:
                matches = [overlap_match(geo[0], geo[1], g, lam),
                           overlap_match(geo[1], geo[0], g, lam)]
                lg = 0
                for l in range(layers):
                    for d in (0, 1):
                        gq = routs[d][l][0].view(a.batch, 1 + g * g, -1)
                        gk = mrouts[1 - d][l][0].view(a.batch, 1 + g * g, -1)
                        c, pt = ogar_direction(gq, gk, matches[d], tau)
                        lg = lg + (1 - alpha) * c + alpha * pt
                loss = loss + w_g * lg
        loss_value = loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not math.isfinite(loss_value):
            raise SystemExit("loss is not finite")
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    print(f"{a.batch / times[len(times) // 2]:.1f}")
    if dev.type == "cuda":
        print(f"peak_memory_gib {torch.cuda.max_memory_allocated(dev) / 2**30:.2f}")


if __name__ == "__main__":
    main()
