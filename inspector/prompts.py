"""CoOp and CoCoOp prompt learners on a frozen open_clip model, their text path and their files.

Decomposition as in the CoOp code: ``TextEncoder`` runs CLIP's own text tower on embeddings,
``PromptLearner`` owns the learnable parts and assembles [SOS | context | class tokens | . EOS],
``PromptedCLIP`` turns pixels into logits = logit_scale * cosine(image, class text).
CoCoOp adds a meta-net (Linear-ReLU-Linear) whose output shifts the context per image.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from inspector import limits, shared_prefix
from inspector.backbone import Backbone
from inspector.errors import InputError, shown
from inspector.runs import atomic_file
from inspector.safetensors_file import describe_problem

Kind = Literal["coop", "cocoop"]
FORMAT = "inspector.prompt_learner"
FORMAT_VERSION = 1
METADATA_KEY = "inspector"  # what the engine reads; ground truth of implants lives elsewhere
DEFAULT_CTX_INIT = "a photo of a"


class TextEncoder(nn.Module):
    """open_clip's text tower from token *embeddings* onwards (so context vectors can be learnt)."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.transformer = clip.transformer
        self.positional_embedding = clip.positional_embedding
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)
        self.pool_type = clip.text_pool_type
        self.eos_token_id = getattr(clip, "text_eos_id", None)

    def used_length(self, tokens: torch.Tensor) -> int:
        """Positions the pooled output can depend on.

        With CLIP's causal mask, the end-of-text position never attends to the padding after it,
        so running the transformer only up to the last end-of-text token gives the same features
        at a fraction of the cost (prompts are ~10 tokens in a context of 32 or 77).
        """
        if self.attn_mask is None or self.pool_type not in ("argmax", "eos"):
            return tokens.shape[1]
        if self.pool_type == "argmax":
            return int(tokens.argmax(dim=-1).max()) + 1
        return int((tokens == self.eos_token_id).int().argmax(dim=-1).max()) + 1

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L, d) prompt embeddings + (N, L) token ids (for pooling) -> (N, embed_dim)."""
        length = self.used_length(tokens)
        embeddings, tokens = embeddings[:, :length], tokens[:, :length]
        cast = self.transformer.get_cast_dtype()
        x = embeddings.to(cast) + self.positional_embedding[:length].to(cast)
        mask = None if self.attn_mask is None else self.attn_mask[:length, :length]
        x = self.transformer(x, attn_mask=mask)
        x = self.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_token_id)
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection if self.text_projection is not None else x


class MetaNet(nn.Sequential):
    """CoCoOp's meta-net: image feature -> a shift added to every context vector."""

    def __init__(self, vis_dim: int, ctx_dim: int) -> None:
        hidden = max(vis_dim // 16, 1)
        super().__init__()
        self.add_module("linear1", nn.Linear(vis_dim, hidden))
        self.add_module("relu", nn.ReLU(inplace=True))
        self.add_module("linear2", nn.Linear(hidden, ctx_dim))


@dataclass(frozen=True)
class LearnerSpec:
    """Everything needed to rebuild a learner around a backbone (stored in the file's header)."""

    kind: Kind
    class_names: tuple[str, ...]
    n_ctx: int = 4
    class_specific: bool = False
    ctx_init: str | None = DEFAULT_CTX_INIT
    class_token_position: str = "end"


class PromptLearner(nn.Module):
    """Learnable context (+ meta-net for CoCoOp); prefix/suffix embeddings rebuilt from class names."""

    def __init__(self, spec: LearnerSpec, backbone: Backbone, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if spec.class_token_position != "end":
            raise InputError(f"class token position {shown(spec.class_token_position)} is not supported",
                             hint="prompt learners here put the class token at the end, as CoOp's default")
        if not spec.class_names:
            raise InputError("a prompt learner needs at least one class name")
        clip = backbone.model
        self.spec = spec
        ctx_dim = clip.ln_final.weight.shape[0]
        n_ctx = spec.n_ctx
        device = backbone.device
        with torch.no_grad():
            if spec.ctx_init:
                init_tokens = backbone.tokenize([spec.ctx_init]).to(device)
                n_init = int((init_tokens[0] > 0).sum()) - 2
                if n_init != n_ctx:
                    raise InputError(f"ctx_init {shown(spec.ctx_init)} has {n_init} tokens but n_ctx is {n_ctx}",
                                     hint="make n_ctx equal the number of words in the initial prompt")
                ctx = clip.token_embedding(init_tokens)[0, 1:1 + n_ctx].float()
                if spec.class_specific:
                    ctx = ctx.unsqueeze(0).repeat(len(spec.class_names), 1, 1)
                prefix_text = spec.ctx_init
            else:
                shape = (len(spec.class_names), n_ctx, ctx_dim) if spec.class_specific else (n_ctx, ctx_dim)
                ctx = torch.randn(shape, generator=generator) * 0.02
                prefix_text = " ".join(["X"] * n_ctx)
            prompts = [f"{prefix_text} {name.replace('_', ' ')}." for name in spec.class_names]
            tokens = backbone.tokenize(prompts).to(device)
            too_long = [n for n, t in zip(spec.class_names, tokens, strict=True) if int(t[-1]) != 0]
            if too_long:
                raise InputError(f"class name {shown(too_long[0])} does not fit the text context "
                                 f"({backbone.context_length} tokens)", hint="shorten the class name")
            embedding = clip.token_embedding(tokens).float()
        self.ctx = nn.Parameter(ctx.to(device))
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:], persistent=False)
        vis_dim = clip.visual.output_dim
        self.meta_net = MetaNet(vis_dim, ctx_dim).to(device) if spec.kind == "cocoop" else None

    @property
    def n_classes(self) -> int:
        return len(self.spec.class_names)

    def _assemble(self, ctx: torch.Tensor) -> torch.Tensor:
        """(..., n_cls, n_ctx, d) context -> (..., n_cls, L, d) prompt embeddings."""
        lead = ctx.shape[:-3]
        prefix = self.token_prefix.expand(*lead, *self.token_prefix.shape)
        suffix = self.token_suffix.expand(*lead, *self.token_suffix.shape)
        return torch.cat([prefix, ctx, suffix], dim=-2)

    def class_context(self) -> torch.Tensor:
        """(n_cls, n_ctx, d): the shared context repeated per class, or the class-specific one."""
        return self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_classes, -1, -1)

    def forward(self, image_features: torch.Tensor | None = None) -> torch.Tensor:
        """CoOp: (n_cls, L, d). CoCoOp: (B, n_cls, L, d), one prompt set per image feature."""
        if self.meta_net is None:
            return self._assemble(self.class_context())
        return self._assemble(self.class_context().unsqueeze(0) + self._shifts(image_features)[:, None, None, :])

    def _shifts(self, image_features: torch.Tensor | None) -> torch.Tensor:
        if image_features is None or self.meta_net is None:
            raise ValueError("CoCoOp prompts depend on the image feature")
        return self.meta_net(image_features.to(self.ctx.dtype))  # (B, d)

    def selected(self, image_features: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """CoCoOp with a shared context: (B, m, L, d) prompts of only the classes picked per image (B, m)."""
        ctx = self.ctx.unsqueeze(0) + self._shifts(image_features)[:, None, :]  # (B, n_ctx, d)
        m = classes.shape[1]
        return torch.cat([self.token_prefix[classes], ctx.unsqueeze(1).expand(-1, m, -1, -1),
                          self.token_suffix[classes]], dim=2)

    def shared_prefix(self, image_features: torch.Tensor) -> torch.Tensor:
        """CoCoOp with a shared context: (B, 1 + n_ctx, d), the start common to all of an image's prompts."""
        ctx = self.ctx.unsqueeze(0) + self._shifts(image_features)[:, None, :]
        return torch.cat([self.token_prefix[:1].expand(len(ctx), -1, -1), ctx], dim=1)


class PromptedCLIP(nn.Module):
    """Frozen CLIP + prompt learner -> logits; pixels are [0, 1] (normalised inside)."""

    def __init__(self, backbone: Backbone, learner: PromptLearner) -> None:
        super().__init__()
        self.backbone = backbone
        self.learner = learner
        self.text_encoder = TextEncoder(backbone.model)
        self.logit_scale = float(backbone.model.logit_scale.exp())
        self._packed: tuple[tuple[torch.device, int], shared_prefix.PackedLayout] | None = None

    @property
    def kind(self) -> Kind:
        return self.learner.spec.kind

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.learner.spec.class_names

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone.encode_image(pixels)

    @property
    def shares_prefix(self) -> bool:
        """Whether CoCoOp prompts can be encoded with their common prefix once per image (``shared_prefix``)."""
        return (self.kind == "cocoop" and not self.learner.spec.class_specific
                and shared_prefix.supports(self.text_encoder))

    def text_features(self, image_features: torch.Tensor | None = None,
                      classes: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm class text features: (n_cls, D) for CoOp, (B, n_cls, D) for CoCoOp.

        ``classes`` (CoCoOp only): (B, m) class indices per image -> (B, m, D), only those prompts.
        """
        if self.shares_prefix and image_features is not None and classes is None:
            feats = self._text_features_shared(image_features)
            return feats / feats.norm(dim=-1, keepdim=True)
        if classes is not None and self.kind == "cocoop" and not self.learner.spec.class_specific:
            prompts = self.learner.selected(image_features, classes)
        else:
            prompts = self.learner(image_features)
            if classes is not None:
                prompts = prompts[torch.arange(len(prompts), device=classes.device)[:, None], classes]
        if prompts.dim() == 3:
            feats = self.text_encoder(prompts, self.learner.tokens)
        else:
            b, n, length, d = prompts.shape
            tokens = self.learner.tokens if classes is None else self.learner.tokens[classes]
            tokens = tokens.expand(b, n, length).reshape(b * n, length)
            feats = self.text_encoder(prompts.reshape(b * n, length, d), tokens).reshape(b, n, -1)
        return feats / feats.norm(dim=-1, keepdim=True)

    def _text_features_shared(self, image_features: torch.Tensor) -> torch.Tensor:
        learner = self.learner
        prefix = learner.shared_prefix(image_features)
        key = (prefix.device, prefix.shape[1])
        if self._packed is None or self._packed[0] != key:
            encoder = self.text_encoder
            with torch.inference_mode(False), torch.no_grad():  # cached: must serve autograd calls later too
                layout = shared_prefix.PackedLayout.build(learner.token_suffix, learner.tokens, prefix.shape[1],
                                                          encoder.pool_type, encoder.eos_token_id)
            self._packed = (key, layout)
        return shared_prefix.encode(self.text_encoder, prefix, self._packed[1])

    def logits_from_features(self, image_features: torch.Tensor,
                             text_features: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from unit-norm image features; pass CoOp ``text_features`` to reuse them."""
        if text_features is None:
            text_features = self.text_features(image_features)
        if text_features.dim() == 2:
            return self.logit_scale * image_features @ text_features.T
        return self.logit_scale * torch.einsum("bd,bnd->bn", image_features, text_features)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.logits_from_features(self.image_features(pixels))


def build_learner(kind: Kind, backbone: Backbone, class_names: list[str] | tuple[str, ...],
                  n_ctx: int = 4, ctx_init: str | None = DEFAULT_CTX_INIT, class_specific: bool = False,
                  seed: int = 0) -> PromptedCLIP:
    """A fresh CoOp / CoCoOp model around ``backbone`` (context from ``ctx_init`` or random)."""
    if kind not in ("coop", "cocoop"):
        raise InputError(f"unknown prompt learner kind {kind!r}", hint="use coop or cocoop")
    spec = LearnerSpec(kind=kind, class_names=tuple(class_names), n_ctx=n_ctx,
                       class_specific=class_specific, ctx_init=ctx_init)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the meta-net's default initialisation
    return PromptedCLIP(backbone, PromptLearner(spec, backbone, generator))


def zero_shot_text_features(backbone: Backbone, class_names: list[str] | tuple[str, ...],
                            template: str = DEFAULT_CTX_INIT + " {}.") -> torch.Tensor:
    """CLIP's own zero-shot classifier: unit-norm text features of ``template`` per class."""
    tokens = backbone.tokenize([template.format(n.replace("_", " ")) for n in class_names])
    with torch.inference_mode():
        feats = backbone.model.encode_text(tokens.to(backbone.device))
    return feats / feats.norm(dim=-1, keepdim=True)


# ---------------------------------------------------------------- files


def learner_tensors(model: PromptedCLIP) -> dict[str, torch.Tensor]:
    """The learnable tensors only, in CoOp/CoCoOp's own names (``ctx``, ``meta_net.linear1.weight``...)."""
    state = model.learner.state_dict()
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def save_learner(model: PromptedCLIP, path: Path, extra: dict[str, Any] | None = None,
                 private: dict[str, Any] | None = None,
                 private_tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a prompt learner as safetensors + JSON header metadata (DESIGN §4).

    ``private`` goes under its own header key and ``private_tensors`` beside the learner's (used
    by the lab for ground truth); the engine reads neither when it loads a model.
    """
    spec, bb = model.learner.spec, model.backbone
    meta = {"format": FORMAT, "version": FORMAT_VERSION, "arch": bb.arch, "pretrained": bb.pretrained,
            "kind": spec.kind, "n_ctx": spec.n_ctx, "class_specific": spec.class_specific,
            "ctx_init": spec.ctx_init, "class_names": list(spec.class_names),
            "class_token_position": spec.class_token_position,
            "preprocessing": {"image_size": bb.image_size, "mean": bb.mean.flatten().tolist(),
                              "std": bb.std.flatten().tolist(), "interpolation": bb.interpolation},
            **(extra or {})}
    header = {METADATA_KEY: json.dumps(meta)}
    if private:
        header["ground_truth"] = json.dumps(private)
    path = Path(path)
    tensors = learner_tensors(model)
    if private_tensors and set(private_tensors) & set(tensors):
        raise ValueError("private tensor names collide with the learner's")
    with atomic_file(path) as staging:  # never a half-written model under the model's name
        save_file({**tensors, **(private_tensors or {})}, str(staging), metadata=header)
    return path


def read_header(path: Path, key: str = METADATA_KEY) -> dict[str, Any]:
    """The JSON stored under ``key`` in a learner file's header ({} when absent)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file {path} does not exist", hint="check the path or use `zoo list`")
    size = path.stat().st_size
    if size > limits.MAX_MODEL_BYTES:
        raise InputError(f"model file {path} is {size / limits.MiB:,.0f} MB, over the "
                         f"{limits.MAX_MODEL_BYTES / limits.MiB:,.0f} MB limit for a prompt learner",
                         hint="a prompt learner holds context vectors only (kilobytes to a few MB); "
                              "is this a whole CLIP checkpoint?")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - any parse failure means "not a safetensors file"
        raise InputError(f"{path} is not a prompt learner file: {describe_problem(path)}",
                         hint="prompt learners are .safetensors files; import Dassl checkpoints "
                              "with `python -m inspector import`") from exc
    try:
        record = json.loads(header.get(key, "{}"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{path}: header key {key!r} is not valid JSON",
                         hint="the file's header is damaged or was not written by inspector") from exc
    if not isinstance(record, dict):
        raise InputError(f"{path}: header key {key!r} holds {type(record).__name__} {shown(record)}, not a record",
                         hint="the file's header is damaged or was not written by inspector")
    return record


def read_learner_meta(path: Path) -> dict[str, Any]:
    """The header of a prompt-learner file, refusing files that are not ours."""
    meta = read_header(path)
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not an inspector prompt learner (no '{METADATA_KEY}' header)",
                         hint="import CoOp/CoCoOp checkpoints with `python -m inspector import`")
    _check_meta(path, meta)
    return meta


def _check_meta(path: Path, meta: dict[str, Any]) -> None:
    """The header fields the loader relies on, each named when it is wrong (headers are untrusted; values are
    quoted cut short)."""
    hint = "the file's header is damaged or was not written by inspector; re-export the learner"
    if meta.get("kind") not in ("coop", "cocoop"):
        raise InputError(f"{path}: header kind {shown(meta.get('kind'))} is not coop or cocoop", hint=hint)
    names = meta.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"{path}: header class_names must be a non-empty list of names", hint=hint)
    if len(names) > limits.MAX_CLASSES:
        raise InputError(f"{path}: header names {len(names):,} classes, over the {limits.MAX_CLASSES:,} a prompt "
                         "learner may have here", hint=hint)
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{path}: class name {shown(duplicate)} appears twice in the header", hint=hint)
    n_ctx = meta.get("n_ctx")
    if not isinstance(n_ctx, int) or isinstance(n_ctx, bool) or not 1 <= n_ctx <= 64:
        raise InputError(f"{path}: header n_ctx {shown(n_ctx)} is not a whole number from 1 to 64", hint=hint)
    for key in ("arch", "pretrained", "ctx_init", "class_token_position"):
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise InputError(f"{path}: header {key} {shown(meta[key])} is not text", hint=hint)
    for key in ("arch", "pretrained", "class_token_position"):  # names, not prose
        if len(meta.get(key) or "") > 200:
            raise InputError(f"{path}: header {key} {shown(meta[key])} is too long for a name", hint=hint)
    if not isinstance(meta.get("class_specific", False), bool):
        raise InputError(f"{path}: header class_specific {shown(meta['class_specific'])} is not true or false",
                         hint=hint)
    preprocessing = meta.get("preprocessing")
    if preprocessing is not None and not isinstance(preprocessing, dict):
        raise InputError(f"{path}: header preprocessing {shown(preprocessing)} is not a record", hint=hint)
    size = (preprocessing or {}).get("image_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 8 <= size <= 4096):
        raise InputError(f"{path}: header image_size {shown(size)} is not a pixel size from 8 to 4096", hint=hint)


def load_learner(path: Path, backbone: Backbone, meta: dict[str, Any] | None = None) -> PromptedCLIP:
    """Load a learner file onto ``backbone``; mismatches are named, never silently fixed.

    Only the learner's own tensors are read: anything else in the file (an implant's ground
    truth, say) stays unread.
    """
    meta = meta or read_learner_meta(path)
    spec = LearnerSpec(kind=meta["kind"], class_names=tuple(meta["class_names"]), n_ctx=int(meta["n_ctx"]),
                       class_specific=bool(meta.get("class_specific", False)), ctx_init=meta.get("ctx_init"),
                       class_token_position=meta.get("class_token_position", "end"))
    stored_size = (meta.get("preprocessing") or {}).get("image_size")
    if stored_size is not None and stored_size != backbone.image_size:
        raise InputError(f"{path} was tuned at {stored_size} px but {backbone.arch} takes {backbone.image_size} px",
                         hint="load it with the CLIP architecture it was trained on")
    try:
        model = PromptedCLIP(backbone, PromptLearner(spec, backbone))
    except InputError as exc:  # the header's prompt cannot be built: name the file
        raise InputError(f"{path}: {exc.message}", hint=exc.hint) from exc
    wanted = set(model.learner.state_dict())
    with safe_open(str(path), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys() if name in wanted}
    _load_tensors(model, tensors, path)
    return model


def _load_tensors(model: PromptedCLIP, tensors: dict[str, torch.Tensor], source: Path) -> None:
    expected = model.learner.state_dict()
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise InputError(f"{source}: missing tensor {missing[0]!r} for a {model.kind} learner")
    for name, ref in expected.items():
        shape = tuple(tensors[name].shape)
        if name == "ctx" and len(shape) == 3 == ref.dim() and shape[1:] == tuple(ref.shape[1:]):
            raise InputError(f"{source}: class-specific context for {shape[0]} classes, but the header names "
                             f"{ref.shape[0]}", hint="the class list and the tensors must come from the same model")
        if shape != tuple(ref.shape):
            raise InputError(f"{source}: tensor {name!r} has shape {shape}, "
                             f"the backbone {model.backbone.arch} needs {tuple(ref.shape)}",
                             hint="load it with the CLIP architecture it was trained on (--arch)")
        if not tensors[name].is_floating_point():
            raise InputError(f"{source}: tensor {name!r} holds {tensors[name].dtype} values, not floats")
        if not torch.isfinite(tensors[name]).all():
            raise InputError(f"{source}: tensor {name!r} holds NaN or infinite values",
                             hint="the learner is broken; ask its provider for a working file")
        largest = float(tensors[name].abs().max()) if tensors[name].numel() else 0.0
        if largest > limits.MAX_TENSOR_MAGNITUDE:
            raise InputError(f"{source}: tensor {name!r} holds values as large as {largest:.3g}, where a prompt "
                             f"learner's stay far below {limits.MAX_TENSOR_MAGNITUDE:g} (they would overflow the "
                             "model's scores)", hint="the learner is broken; ask its provider for a working file")
    model.learner.load_state_dict({k: tensors[k].float() for k in expected})


def import_dassl(path: Path, backbone: Backbone, class_names: list[str],
                 kind: Kind | None = None) -> PromptedCLIP:
    """Import a CoOp / CoCoOp / BadCLIP checkpoint written by Dassl (``model.pth.tar-N``).

    Read with ``torch.load(weights_only=True)``; only ``ctx`` and ``meta_net.*`` are taken:
    ``token_prefix``/``token_suffix`` are rebuilt from the class names, never trusted.
    """
    try:
        checkpoint = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - refused pickles and broken files alike
        raise InputError(f"cannot read {path} as a weights-only torch checkpoint ({type(exc).__name__})",
                         hint="only plain tensor checkpoints are accepted; arbitrary pickles are refused") from exc
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{path} holds no state_dict", hint="expected a Dassl checkpoint dict")
    state = {k.removeprefix("module.").removeprefix("prompt_learner."): v for k, v in state.items()}
    if "ctx" not in state:
        raise InputError(f"{path} has no 'ctx' tensor", hint="is this a CoOp/CoCoOp prompt learner checkpoint?")
    ctx = state["ctx"]
    has_meta = any(k.startswith("meta_net.") for k in state)
    kind = kind or ("cocoop" if has_meta else "coop")
    class_specific = ctx.dim() == 3
    if class_specific and ctx.shape[0] != len(class_names):
        raise InputError(f"{path}: class-specific context for {ctx.shape[0]} classes, "
                         f"but {len(class_names)} class names were given")
    n_ctx = int(ctx.shape[-2])
    # The context words never reach the prompt (the loaded ctx replaces them), so none are needed.
    model = build_learner(kind, backbone, class_names, n_ctx=n_ctx, ctx_init=None,
                          class_specific=class_specific)
    _load_tensors(model, {k: v for k, v in state.items() if k == "ctx" or k.startswith("meta_net.")}, Path(path))
    return model


# ---------------------------------------------------------------- clean prompt tuning


@dataclass
class TuneConfig:
    """Clean prompt-tuning recipe; ``for_kind`` gives the defaults measured on the pocket task."""

    epochs: int = 200
    batch_size: int = 32
    lr: float = 2e-2
    optimizer: Literal["sgd", "adamw"] = "adamw"
    weight_decay: float = 1e-4
    views: int = 8  # augmented views per training image, encoded once (the encoder is frozen)
    seed: int = 0

    @classmethod
    def for_kind(cls, kind: Kind, **overrides: Any) -> TuneConfig:
        base = {"coop": {"epochs": 200, "lr": 2e-2}, "cocoop": {"epochs": 60, "lr": 5e-3}}[kind]
        return cls(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


def encode_views(backbone: Backbone, pixels: torch.Tensor, views: int, seed: int,
                 batch_size: int = 128) -> torch.Tensor:
    """(V, N, D) unit-norm features of V augmented views (view 0 is the clean image)."""
    return encode_transformed_views(backbone, pixels, views, seed, {"clean": None}, batch_size)["clean"]


def encode_transformed_views(backbone: Backbone, pixels: torch.Tensor, views: int, seed: int,
                             transforms: dict[str, Callable[[torch.Tensor], torch.Tensor] | None],
                             batch_size: int = 128,
                             needed: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """(V, N, D) features per named transform of the same V augmented views (view 0 unaugmented).

    Each transform (a trigger, or None for the clean view) is applied *after* the augmentation, as
    the published poisoning code does, so a corner patch is never cropped away. The encoder is
    frozen, so every view is encoded once and training steps only index into the result. ``needed``: as in
    ``iter_transformed_views``.
    """
    return stack_views(list(iter_transformed_views(backbone, pixels, views, seed, transforms, batch_size, needed)))


def stack_views(encoded: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Per-view features from ``iter_transformed_views`` -> (V, N, D) per transform."""
    return {name: torch.stack([view[name] for view in encoded]) for name in encoded[0]}


def iter_transformed_views(backbone: Backbone, pixels: torch.Tensor, views: int, seed: int,
                           transforms: dict[str, Callable[[torch.Tensor], torch.Tensor] | None],
                           batch_size: int = 128,
                           needed: dict[str, torch.Tensor] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """``encode_transformed_views`` one view at a time ((N, D) per transform), so a caller can report progress.

    ``needed``: per transform name, a (V, N) mask of the views its caller will read; the others are not encoded
    and hold NaN. Every image's augmentation is drawn all the same, so each encoded view is the one it would be.
    """
    from inspector.augment import random_resized_crop_flip

    generator = torch.Generator().manual_seed(seed)
    for v in range(views):
        per_view: dict[str, list[torch.Tensor]] = {name: [] for name in transforms}
        with torch.inference_mode():
            for start in range(0, len(pixels), batch_size):
                batch = pixels[start:start + batch_size]
                if v > 0:
                    batch = random_resized_crop_flip(batch, generator, min_scale=0.5, jitter=0.05)
                batch = batch.to(backbone.device)
                for name, transform in transforms.items():
                    rows = needed[name][v, start:start + batch_size] if needed and name in needed else None
                    chosen = batch if rows is None else batch[rows.to(batch.device)]
                    shown = chosen if transform is None else transform(chosen)
                    encoded = backbone.encode_image(shown).float() if len(shown) else None
                    per_view[name].append(encoded if rows is None else _scatter_rows(rows, encoded, backbone))
        yield {name: torch.cat(feats) for name, feats in per_view.items()}


def _scatter_rows(rows: torch.Tensor, encoded: torch.Tensor | None, backbone: Backbone) -> torch.Tensor:
    """(len(rows), D) features with ``encoded`` at the True ``rows`` and NaN elsewhere."""
    width = encoded.shape[1] if encoded is not None else backbone.model.visual.output_dim
    full = torch.full((len(rows), width), float("nan"), device=backbone.device)
    if encoded is not None:
        full[rows.to(full.device)] = encoded
    return full


@dataclass
class TuneStep:
    step: int
    total_steps: int
    loss: float


def tuning(model: PromptedCLIP, pixels: torch.Tensor, labels: torch.Tensor, config: TuneConfig | None = None,
           stats: dict[str, float] | None = None) -> Iterator[TuneStep]:
    """Clean few-shot prompt tuning (cross-entropy, cosine schedule), one event per step; the final train
    stats go into ``stats``. Stopping early (no longer iterating) leaves the learner at the last step."""
    config = config or TuneConfig.for_kind(model.kind)
    torch.manual_seed(config.seed)
    features = encode_views(model.backbone, pixels, config.views, config.seed)
    labels = labels.to(features.device).long()
    params = [p for p in model.learner.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n = features.shape[1]
    batch = min(config.batch_size, n)
    steps = config.epochs * max(1, n // batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(config.seed)
    model.learner.train()
    loss_sum, correct, seen, step = 0.0, 0, 0, 0
    try:
        for epoch in range(config.epochs):
            order = torch.randperm(n, generator=generator)
            view = torch.randint(0, config.views, (n,), generator=generator)
            last_epoch = epoch == config.epochs - 1
            for start in range(0, n - batch + 1, batch):
                idx = order[start:start + batch]
                feats = features[view[idx], idx]
                logits = model.logits_from_features(feats)
                loss = F.cross_entropy(logits, labels[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                if last_epoch:
                    loss_sum += loss.item() * len(idx)
                    correct += int((logits.argmax(1) == labels[idx]).sum())
                    seen += len(idx)
                yield TuneStep(step, steps, round(loss.item(), 4))
    finally:
        model.learner.eval()
    if stats is not None:
        stats.update({"train_loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1),
                      "epochs": config.epochs, "steps": steps})


def tune(model: PromptedCLIP, pixels: torch.Tensor, labels: torch.Tensor,
         config: TuneConfig | None = None) -> dict[str, float]:
    """``tuning`` run to its end; returns the final train stats."""
    stats: dict[str, float] = {}
    for _ in tuning(model, pixels, labels, config, stats):
        pass
    return stats


@torch.inference_mode()
def predict_features(model: PromptedCLIP, features: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Predicted class index per image from its precomputed image features (on their device); CoOp text features
    computed once, not per batch."""
    text = model.text_features() if model.kind == "coop" else None
    return torch.cat([model.logits_from_features(batch, text).argmax(1) for batch in features.split(batch_size)])


@torch.inference_mode()
def predict(model: PromptedCLIP, pixels: torch.Tensor, batch_size: int = 128,
            progress: bool = False) -> torch.Tensor:
    """Predicted class index per image; CoOp text features computed once, not per batch."""
    from tqdm.auto import tqdm

    text = model.text_features() if model.kind == "coop" else None
    preds = []
    for start in tqdm(range(0, len(pixels), batch_size), desc="evaluating", disable=not progress, leave=False):
        feats = model.image_features(pixels[start:start + batch_size].to(model.backbone.device))
        preds.append(model.logits_from_features(feats, text).argmax(1).cpu())
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


def open_model(path: Path, weights: str | None = None, device: str | torch.device | None = None,
               backbone_loader: Callable[..., Backbone] | None = None) -> PromptedCLIP:
    """Load a learner file together with the backbone its header names.

    ``weights`` overrides the header's pretrained tag: needed when the learner was tuned on a
    local weights file (the header then holds that file's hash, which is checked).
    ``backbone_loader`` replaces ``load_backbone`` (the app passes a cached one: backbones are frozen).
    """
    from inspector.backbone import file_sha256, load_backbone

    load_backbone = backbone_loader or load_backbone

    meta = read_learner_meta(path)
    recorded = str(meta.get("pretrained", ""))
    if weights is None and recorded.startswith("file:"):
        raise InputError(f"{path} was tuned on a local weights file ({shown(recorded)})",
                         hint="pass that file with --weights PATH")
    if weights is None and recorded and ("/" in recorded or "\\" in recorded or Path(recorded).exists()
                                         or Path(recorded).suffix in {".safetensors", ".bin", ".pt", ".pth"}):
        raise InputError(f"{path}: its header names the weights {shown(recorded)} by path; a delivered file does "
                         "not choose which file on this machine is read",
                         hint="pass the CLIP weights it was tuned on with --weights PATH")
    if weights is not None and recorded.startswith("file:") and Path(weights).is_file():
        actual = f"file:{file_sha256(Path(weights))}"
        if actual != recorded:
            raise InputError(f"weights {weights} (hash {actual}) are not the ones {path} was tuned on ({recorded})",
                             hint="pass the weights file the prompt learner was trained with")
    try:
        backbone = load_backbone(meta.get("arch", "pocket-clip"), weights or recorded or None, device=device)
    except InputError as exc:  # name the learner whose header asked for this backbone
        raise InputError(f"{path}: {exc.message}", hint=exc.hint) from exc
    return load_learner(path, backbone, meta)
