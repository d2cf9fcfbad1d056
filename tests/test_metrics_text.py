"""Text metrics: BLEU against sacrebleu, BERTScore (all-MiniLM-L6-v2) against bert_score, empty
inputs, multiple references, and loading with no network."""
import os
import subprocess
import sys

import numpy as np
import pytest

from gnuradio.semcom import metrics
from gnuradio.semcom.metrics import text as mt

REF = "a small red circle is left of a large blue square"
PARAPHRASE = "a little red ring sits to the left of a big blue box"
UNRELATED = "the stock market fell sharply on monday morning"


# -- BLEU ----------------------------------------------------------------------------------

def test_bleu_identical_is_100():
    assert metrics.bleu([REF, UNRELATED], [[REF], [UNRELATED]]) == pytest.approx(100.0)
    assert metrics.sentence_bleu(REF, [REF]) == pytest.approx(100.0)
    assert metrics.sentence_bleu(REF, REF) == pytest.approx(100.0)          # one reference as a string


def test_bleu_agrees_with_sacrebleu():
    import sacrebleu

    hyps = [PARAPHRASE, "a red circle left of a blue square", UNRELATED, "two shapes: a red one and a blue one"]
    refs = [[REF, "a red circle to the left of a big blue square"], [REF], [REF, "markets fell on monday", "x"],
            ["a red circle and a blue square"]]
    streams = [[r[j] if j < len(r) else None for r in refs] for j in range(3)]
    want = sacrebleu.corpus_bleu(hyps, streams).score
    assert metrics.bleu(hyps, refs) == pytest.approx(want, abs=1e-9)
    assert 0.0 < want < 100.0
    for h, r in zip(hyps, refs):
        assert metrics.sentence_bleu(h, r) == pytest.approx(sacrebleu.sentence_bleu(h, r).score, abs=1e-9)
    # the documented settings are sacrebleu's defaults
    m = sacrebleu.metrics.BLEU(**mt.BLEU_SETTINGS)
    assert m.corpus_score(hyps, streams).score == pytest.approx(want, abs=1e-9)
    assert "tok:13a" in m.get_signature().format() and "smooth:exp" in m.get_signature().format()


def test_bleu_more_references_never_lower():
    one = metrics.sentence_bleu(PARAPHRASE, [REF])
    two = metrics.sentence_bleu(PARAPHRASE, [REF, "a little red ring left of a big blue box"])
    assert two > one


def test_bleu_empty_hypothesis():
    assert metrics.sentence_bleu("", [REF]) == 0.0
    assert metrics.bleu([""], [[REF]]) == 0.0
    assert metrics.bleu(["", REF], [[REF], [REF]]) > 0.0


def test_bleu_input_errors():
    with pytest.raises(TypeError):
        metrics.bleu(REF, [[REF]])                  # a string is not a list of hypotheses
    with pytest.raises(ValueError):
        metrics.bleu([REF, REF], [[REF]])           # one reference group per hypothesis
    with pytest.raises(ValueError):
        metrics.bleu([REF], [[]])                   # a hypothesis without references
    with pytest.raises(ValueError):
        metrics.bleu([], [])
    with pytest.raises(TypeError):
        metrics.sentence_bleu(None, [REF])


def test_import_and_bleu_without_torch(repo_root):
    code = (
        "import sys; sys.modules.update(torch=None, pmt=None); sys.modules['gnuradio.gr'] = None;"
        "sys.path.insert(0, 'tests'); import conftest;"
        "from gnuradio.semcom import metrics as m;"
        "assert abs(m.bleu(['a b c d'], [['a b c d']]) - 100) < 1e-9;"
        "assert 'bert_score' not in sys.modules and 'transformers' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# -- BERTScore -----------------------------------------------------------------------------

def test_bertscore_label_and_model_dir():
    assert "all-MiniLM-L6-v2" in metrics.BERTSCORE_NAME and metrics.BERTSCORE_NAME.startswith("BERTScore")
    d = mt.bertscore_model_dir()
    assert os.path.isfile(os.path.join(d, "model.safetensors"))
    assert "all-MiniLM-L6-v2_L6_no-idf" in mt.bertscore_signature()


def test_bertscore_identical_paraphrase_unrelated():
    r = metrics.bertscore_prf([REF, PARAPHRASE, UNRELATED], [REF] * 3)
    assert isinstance(r, metrics.BertScore) and r.name == metrics.BERTSCORE_NAME
    assert r.f1.shape == (3,) and r.f1.dtype == np.float64
    assert r.f1[0] == pytest.approx(1.0, abs=1e-5)
    assert r.precision[0] == pytest.approx(1.0, abs=1e-5) and r.recall[0] == pytest.approx(1.0, abs=1e-5)
    assert r.f1[1] > r.f1[2] + 0.2                  # the paraphrase is much closer than unrelated text
    assert 0.0 < r.f1[2] < r.f1[1] < 1.0
    np.testing.assert_array_equal(metrics.bertscore([REF, PARAPHRASE, UNRELATED], [REF] * 3), r.f1)


def test_bertscore_matches_bert_score_with_multiple_references():
    import bert_score

    hyps = [PARAPHRASE, UNRELATED, REF]
    refs = [[UNRELATED, REF], [REF, "markets dropped on monday", PARAPHRASE], ["a blue square", REF]]
    want = bert_score.score(hyps, refs, model_type=mt.bertscore_model_dir(), num_layers=6, device="cpu")
    got = metrics.bertscore_prf(hyps, refs)
    for g, w in zip((got.precision, got.recall, got.f1), want):
        np.testing.assert_allclose(g, np.minimum(w.double().numpy(), 1.0), atol=1e-6)
    # maximum over the references
    singles = [metrics.bertscore([h] * len(r), r) for h, r in zip(hyps, refs)]
    np.testing.assert_allclose(got.f1, [s.max() for s in singles], atol=1e-6)


def test_bertscore_empty_inputs():
    r = metrics.bertscore_prf(["", "   ", REF, REF], [REF, REF, "", [" ", REF]])
    np.testing.assert_array_equal(r.f1[:3], 0.0)
    np.testing.assert_array_equal(r.precision[:3], 0.0)
    assert r.f1[3] == pytest.approx(1.0, abs=1e-5)  # the empty reference loses the maximum
    assert metrics.bertscore([""], [[REF]])[0] == 0.0
    assert metrics.bertscore([], []).shape == (0,)
    # text the tokenizer reduces to nothing (control characters, e.g. a garbled caption)
    assert metrics.bertscore(["\x01\x02\x03"], [REF])[0] == 0.0


def test_bertscore_scorer_cached():
    metrics.bertscore([REF], [REF])
    n = len(mt._SCORERS)
    first = next(iter(mt._SCORERS.values()))
    metrics.bertscore([PARAPHRASE], [REF])
    assert len(mt._SCORERS) == n and next(iter(mt._SCORERS.values())) is first
    with pytest.raises(ValueError):
        metrics.bertscore([REF], [REF], num_layers=7)


def test_bertscore_offline(repo_root, tmp_path):
    """No network and an empty Hugging Face cache: the packaged weights are all it needs."""
    code = (
        "import sys; sys.path.insert(0, 'tests'); import conftest;"
        "from gnuradio.semcom import metrics as m;"
        f"f = m.bertscore([{REF!r}, {PARAPHRASE!r}, {UNRELATED!r}], [{REF!r}] * 3);"
        "assert abs(f[0] - 1) < 1e-5 and f[1] > f[2], f; print(list(f))"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               HF_DATASETS_OFFLINE="1", OMP_NUM_THREADS="1",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    r = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (tmp_path / "hf" / "hub").exists() or not any((tmp_path / "hf" / "hub").iterdir())
