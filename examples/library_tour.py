"""The README's library section, runnable: `python examples/library_tour.py` (writes runs/ in the current folder).

Only the public entry points of `import prunekit`: train, mask 90% (GPMT) and finetune, reload, remove half the
channels for real, measure, prune gradually in a hand-written loop, export.
"""
import torch
import prunekit

train = prunekit.get_dataset("digits", train=True)       # 8x8 handwritten digits, bundled: no download
test = prunekit.get_dataset("digits", train=False)
model = prunekit.create_model("resnet20", num_classes=10, in_channels=1)
base = prunekit.fit(model, train, test, prunekit.TrainConfig(epochs=10, lr=0.1, schedule="cosine"),
                    out_dir="runs/base")
print(f"dense:        top-1 {base.final['val_top1']:.2f}%  params {prunekit.count_params(model):,}  "
      f"MACs {prunekit.count_flops(model, (1, 1, 8, 8)).macs:,}")

# weight masks: 90% of the conv+linear weights (GPMT), then finetune with the masks held at exactly zero
res = prunekit.prune_unstructured(model, "gpmt", 0.9, min_threshold=0.05)
ft = prunekit.fit(model, train, test, prunekit.TrainConfig(epochs=3, lr=0.01), masks=res.masks, out_dir="runs/ft")
sparse_macs = prunekit.count_flops(model, (1, 1, 8, 8), sparse=True).macs
print(f"90% masked:   top-1 {ft.final['val_top1']:.2f}%  sparsity {res.report.sparsity:.4f}  "
      f"sparse MACs {sparse_macs:,}")
ckpt = prunekit.load_checkpoint("runs/ft")              # model + bool masks; nothing is unpickled
print(f"reloaded:     {ckpt.model.prunekit_name} with {len(ckpt.masks)} masks")

# channels removed for real (any traceable model), proved exact against the unpruned model
dense = prunekit.load_model("runs/base")
small = prunekit.prune_structured(dense, ratio=0.5).model
fs = prunekit.fit(small, train, test, prunekit.TrainConfig(epochs=3, lr=0.01), out_dir="runs/small")
lat_dense = prunekit.measure_latency(dense, (1, 8, 8), batch_size=64, threads=1).median_ms
lat_small = prunekit.measure_latency(small, (1, 8, 8), batch_size=64, threads=1).median_ms
print(f"50% channels: top-1 {fs.final['val_top1']:.2f}%  params {prunekit.count_params(small):,}  "
      f"MACs {prunekit.count_flops(small, (1, 1, 8, 8)).macs:,}  latency {lat_dense:.2f} -> {lat_small:.2f} ms "
      f"(batch 64, 1 thread)")

# your own training loop: gradual (AGP) pruning to 80% with any optimizer
model = prunekit.load_model("runs/base")
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
sp = prunekit.Sparsifier(model, method="global", schedule=prunekit.AGP(0, 40, 10, 0.0, 0.8)).attach(opt)
x, y = train.eval_transform(train.images[:512]), train.labels[:512]    # normalised uint8 images
for step in range(50):
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    opt.zero_grad()
    sp.step()
print(f"sparsifier:   {sp.sparsity()['sparsity']:.4f} of the conv weights pruned, "
      f"{sp.sparsity()['revived']} revived")
out = prunekit.export(small, "runs/small.pt", format="torchscript")   # loaded back and compared with eager
print(f"export:       {out.path}  max |torchscript - eager| {out.max_abs_diff:.1e}")
