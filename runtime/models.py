"""Small real ONNX models built from seeded NumPy weights, and the data they eat.

The demo, the tests and the benchmark publish these, so they are real
graphs that onnxruntime runs, with weights that do something:

* :func:`mlp_classifier` -- 16 features -> 4 classes. A fixed random ReLU
  layer (the "body") and a softmax head fitted to :func:`blobs` with
  :func:`fit_softmax_head`, the same routine the fine-tune runner uses. It
  outputs ``probs``, ``logits`` and ``embedding`` (the body's output, which
  fine-tuning trains a new head on).
* :func:`mlp_large` -- a deeper, wider MLP (256 -> 3 x 1024 -> 16) that takes
  a few hundred microseconds per call on one core: the runtime-overhead
  benchmark needs a model whose own cost is well above 100 us.
* :func:`text_scorer` -- a bag-of-words scorer: token ids and a mask go in,
  a score in (0, 1) comes out. Words in :data:`GOOD_WORDS` pull the score
  up; the agent workflow's propose -> evaluate -> refine loop climbs it.

Everything is deterministic for a seed: the same call gives the same bytes
(and so the same artifact id), which the rerun tests rely on.

Metadata properties in each model (``arcnet.*``) tell the runners what they
need: the task, the embedding output and head initialisers for fine-tuning,
the tokenizer for the scorer.

Knowingly left out: anything trained by backpropagation through the body;
fine-tuning is head-only (transfer learning's linear probe).
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = [
    "GOOD_WORDS",
    "IR_VERSION",
    "OPSET",
    "WORDS",
    "blobs",
    "fit_softmax_head",
    "mlp_classifier",
    "mlp_large",
    "replace_head",
    "text_scorer",
    "tokenize",
]

OPSET = 17  # ReduceSum takes axes as an input from 13; everything here exists in 17
IR_VERSION = 8  # onnxruntime >= 1.17 reads it

# The agent workflow's vocabulary: proposals are drawn from WORDS; the scorer
# rewards GOOD_WORDS. Plain words about the mesh, so outputs read sensibly.
WORDS: tuple[str, ...] = (
    "fast", "cheap", "green", "solar", "battery", "local", "cached", "reliable",
    "slow", "costly", "remote", "cold", "idle", "busy", "noisy", "stale",
    "gpu", "cpu", "region", "peer", "model", "batch", "shard", "replica",
    "low", "latency", "energy", "window", "audit", "signed", "verified", "hot",
)
GOOD_WORDS: tuple[str, ...] = ("fast", "cheap", "green", "solar", "cached", "reliable", "verified", "hot")

# Tokenizer: words are lower-cased alphanumeric runs, each mapped to
# 1 + crc32(word) % (vocab - 1); id 0 is padding. crc32 rather than hash():
# Python's string hash is salted per process.
TOKENIZER = "crc32-bow"


def _model(graph: onnx.GraphProto, props: dict[str, str], doc: str) -> bytes:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="arcnet.runtime.models",
        producer_version="1",
        ir_version=IR_VERSION,
        doc_string=doc,
    )
    for k in sorted(props):
        entry = model.metadata_props.add()
        entry.key, entry.value = k, props[k]
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def blobs(seed: int, n: int, in_dim: int = 16, classes: int = 4, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A labelled dataset: ``classes`` Gaussian clusters in ``in_dim`` dimensions.

    The centres depend only on ``in_dim`` and ``classes`` (fixed seed), so
    train and test sets drawn with different seeds share them; ``shift``
    moves every centre along the first axis (a distribution shift to
    fine-tune on).
    """
    if n < 1 or in_dim < 1 or classes < 2:
        raise ValueError("blobs needs n >= 1, in_dim >= 1 and classes >= 2")
    centres = np.random.default_rng(1234 + 31 * in_dim + classes).normal(0.0, 0.6, size=(classes, in_dim))
    centres[:, 0] += shift
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    x = centres[y] + rng.normal(0.0, 1.0, size=(n, in_dim))
    return x.astype(np.float32), y.astype(np.int64)


def fit_softmax_head(
    features: np.ndarray,
    labels: np.ndarray,
    classes: int,
    *,
    epochs: int = 200,
    lr: float = 0.5,
    l2: float = 1e-3,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression by full-batch gradient descent, in float64.

    Returns ``(weight [features, classes], bias [classes])`` as float32.
    Features are standardised internally and the scaling is folded back
    into the weights, so one learning rate suits any feature scale.
    Deterministic: the only randomness is the seeded initialisation, and
    full-batch steps have no sampling order.
    """
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if x.ndim != 2 or y.shape != (x.shape[0],) or x.shape[0] == 0:
        raise ValueError(f"features must be [n, d] and labels [n], got {x.shape} and {y.shape}")
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"labels must lie in [0, {classes}), got {int(y.min())}..{int(y.max())}")
    n, d = x.shape
    mu = x.mean(axis=0)
    sd = x.std(axis=0)
    sd[sd == 0] = 1.0
    z = (x - mu) / sd
    onehot = np.zeros((n, classes))
    onehot[np.arange(n), y] = 1.0
    rng = np.random.default_rng(seed)
    w = rng.normal(0.0, 0.01, size=(d, classes))
    b = np.zeros(classes)
    for _ in range(epochs):
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - onehot) / n
        w -= lr * (z.T @ g + l2 * w)
        b -= lr * g.sum(axis=0)
    # fold the standardisation in: z @ w + b == x @ (w / sd) + (b - (mu / sd) @ w)
    w_x = w / sd[:, None]
    b_x = b - (mu / sd) @ w
    return w_x.astype(np.float32), b_x.astype(np.float32)


def _relu_body(rng: np.random.Generator, in_dim: int, hidden: int) -> tuple[np.ndarray, np.ndarray]:
    w = rng.normal(0.0, np.sqrt(2.0 / in_dim), size=(in_dim, hidden)).astype(np.float32)
    b = rng.normal(0.0, 0.1, size=hidden).astype(np.float32)
    return w, b


def _classifier_graph(
    name: str, in_dim: int, body: list[tuple[np.ndarray, np.ndarray]], head_w: np.ndarray, head_b: np.ndarray
) -> onnx.GraphProto:
    nodes, inits = [], []
    prev = "x"
    for i, (w, b) in enumerate(body):
        out = "embedding" if i == len(body) - 1 else f"h{i}"
        inits += [_init(f"body{i}.weight", w), _init(f"body{i}.bias", b)]
        nodes.append(helper.make_node("Gemm", [prev, f"body{i}.weight", f"body{i}.bias"], [f"{out}.pre"]))
        nodes.append(helper.make_node("Relu", [f"{out}.pre"], [out]))
        prev = out
    classes = head_w.shape[1]
    inits += [_init("head.weight", head_w), _init("head.bias", head_b)]
    nodes.append(helper.make_node("Gemm", ["embedding", "head.weight", "head.bias"], ["logits"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    hidden = body[-1][0].shape[1]
    return helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", in_dim])],
        [
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", classes]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", classes]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", hidden]),
        ],
        inits,
    )


_CLASSIFIER_PROPS = {
    "arcnet.task": "classify",
    "arcnet.embedding": "embedding",
    "arcnet.head": "head.weight,head.bias",
}


def mlp_classifier(seed: int = 0, in_dim: int = 16, hidden: int = 32, classes: int = 4, train_n: int = 2048) -> bytes:
    """A trained 16 -> 32 -> 4 classifier (ONNX bytes); see the module docstring."""
    rng = np.random.default_rng(seed)
    w1, b1 = _relu_body(rng, in_dim, hidden)
    x, y = blobs(seed + 1, train_n, in_dim, classes)
    emb = np.maximum(x @ w1 + b1, 0.0)
    hw, hb = fit_softmax_head(emb, y, classes, seed=seed)
    graph = _classifier_graph("mlp_classifier", in_dim, [(w1, b1)], hw, hb)
    return _model(graph, _CLASSIFIER_PROPS, f"MLP classifier {in_dim}->{hidden}->{classes}, seed {seed}")


def mlp_large(seed: int = 0, in_dim: int = 256, hidden: int = 1024, depth: int = 3, classes: int = 16) -> bytes:
    """A wider, deeper classifier with random weights: a few hundred us per call."""
    rng = np.random.default_rng(seed)
    body = [_relu_body(rng, in_dim, hidden)] + [_relu_body(rng, hidden, hidden) for _ in range(depth - 1)]
    hw = rng.normal(0.0, np.sqrt(1.0 / hidden), size=(hidden, classes)).astype(np.float32)
    hb = np.zeros(classes, dtype=np.float32)
    graph = _classifier_graph("mlp_large", in_dim, body, hw, hb)
    return _model(graph, _CLASSIFIER_PROPS, f"MLP {in_dim}->{depth}x{hidden}->{classes}, seed {seed}")


def replace_head(model_bytes: bytes, weight: np.ndarray, bias: np.ndarray, doc: str | None = None) -> bytes:
    """The same model with a new classifier head (the fine-tune export).

    Uses the model's ``arcnet.head`` property to find the head initialisers;
    the class count may change, and the output shapes follow.
    """
    model = onnx.load_from_string(model_bytes)
    props = {p.key: p.value for p in model.metadata_props}
    if "arcnet.head" not in props:
        raise ValueError("model has no arcnet.head property: it was not built for head fine-tuning")
    w_name, b_name = props["arcnet.head"].split(",")
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    bias = np.ascontiguousarray(bias, dtype=np.float32)
    if weight.ndim != 2 or bias.shape != (weight.shape[1],):
        raise ValueError(f"head weight must be [d, c] and bias [c], got {weight.shape} and {bias.shape}")
    found = 0
    for init in model.graph.initializer:
        if init.name == w_name:
            old = numpy_helper.to_array(init)
            if old.shape[0] != weight.shape[0]:
                raise ValueError(f"head input width is {old.shape[0]}, new weight has {weight.shape[0]}")
            init.CopyFrom(_init(w_name, weight))
            found += 1
        elif init.name == b_name:
            init.CopyFrom(_init(b_name, bias))
            found += 1
    if found != 2:
        raise ValueError(f"head initialisers {w_name}, {b_name} not found in the graph")
    classes = weight.shape[1]
    for out in model.graph.output:
        if out.name in ("probs", "logits"):
            out.type.tensor_type.shape.dim[1].dim_value = classes
    if doc is not None:
        model.doc_string = doc
    onnx.checker.check_model(model)
    return model.SerializeToString()


# --------------------------------------------------------------------------
# text scorer


def _token_id(word: str, vocab: int) -> int:
    return 1 + zlib.crc32(word.encode()) % (vocab - 1)


def tokenize(texts: Sequence[str], vocab: int = 512, max_tokens: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Token ids ``int64 [n, max_tokens]`` and mask ``float32 [n, max_tokens]`` for ``texts``."""
    ids = np.zeros((len(texts), max_tokens), dtype=np.int64)
    mask = np.zeros((len(texts), max_tokens), dtype=np.float32)
    for i, text in enumerate(texts):
        words = "".join(c if c.isalnum() else " " for c in text.lower()).split()[:max_tokens]
        for j, w in enumerate(words):
            ids[i, j] = _token_id(w, vocab)
            mask[i, j] = 1.0
    return ids, mask


def text_scorer(seed: int = 0, vocab: int = 512, dim: int = 32, max_tokens: int = 16) -> bytes:
    """Bag-of-words scorer: mean word embedding -> linear -> sigmoid."""
    rng = np.random.default_rng(seed)
    emb = rng.normal(0.0, 1.0, size=(vocab, dim)).astype(np.float32)
    emb[0] = 0.0  # padding
    w = rng.normal(0.0, 1.0, size=(dim, 1)).astype(np.float32)
    w /= np.linalg.norm(w)
    # Good words lean along w, the rest are pushed off it: the mean embedding
    # of a text then scores by its share of good words.
    good = {_token_id(g, vocab) for g in GOOD_WORDS}
    for t in range(1, vocab):
        along = float(emb[t] @ w[:, 0])
        target = 2.5 if t in good else -0.5
        emb[t] += (target - along) * w[:, 0]
    b = np.zeros(1, dtype=np.float32)
    nodes = [
        helper.make_node("Gather", ["embedding.table", "ids"], ["tok"], axis=0),  # [n, L, d]
        helper.make_node("Unsqueeze", ["mask", "axis.2"], ["mask3"]),  # [n, L, 1]
        helper.make_node("Mul", ["tok", "mask3"], ["tok.masked"]),
        helper.make_node("ReduceSum", ["tok.masked", "axis.1"], ["tok.sum"], keepdims=0),  # [n, d]
        helper.make_node("ReduceSum", ["mask", "axis.1"], ["count"], keepdims=1),  # [n, 1]
        helper.make_node("Max", ["count", "one"], ["count.safe"]),  # an empty text scores as all-padding
        helper.make_node("Div", ["tok.sum", "count.safe"], ["mean"]),
        helper.make_node("Gemm", ["mean", "score.weight", "score.bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["score"]),
    ]
    inits = [
        _init("embedding.table", emb),
        _init("score.weight", w),
        _init("score.bias", b),
        _init("axis.1", np.array([1], dtype=np.int64)),
        _init("axis.2", np.array([2], dtype=np.int64)),
        _init("one", np.array([1.0], dtype=np.float32)),
    ]
    graph = helper.make_graph(
        nodes,
        "text_scorer",
        [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", max_tokens]),
            helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", max_tokens]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
        inits,
    )
    props = {
        "arcnet.task": "score",
        "arcnet.tokenizer": f"{TOKENIZER}:vocab={vocab}:max_tokens={max_tokens}",
    }
    return _model(graph, props, f"bag-of-words text scorer, vocab {vocab}, dim {dim}, seed {seed}")
