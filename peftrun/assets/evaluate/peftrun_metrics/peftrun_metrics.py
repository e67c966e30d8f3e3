"""peftrun's metrics as a Hugging Face `evaluate` module: the E2E challenge suite or XSum ROUGE.

Load it offline from the installed package (no hub, no download):

    import evaluate
    from peftrun.metrics import evaluate_module_path

    metric = evaluate.load(evaluate_module_path())
    metric.compute(predictions=outputs, references=refs, dataset="e2e")

This file only adapts inputs: the numbers come from `peftrun.metrics.score`, the code `peftrun eval`
runs, so they equal `peftrun eval --predictions F --references R --dataset D --json` exactly (same
names, same raw scale: E2E BLEU 0.69, not 69; XSum ROUGE F1 x100). `peftrun eval` is the reference.
"""

import datasets
import evaluate

from peftrun.metrics import SCORERS, score

_CITATION = """\
@inproceedings{li-liang-2021-prefix,
    title = "Prefix-Tuning: Optimizing Continuous Prompts for Generation",
    author = "Li, Xiang Lisa and Liang, Percy",
    booktitle = "Proceedings of ACL-IJCNLP 2021",
    year = "2021",
    url = "https://aclanthology.org/2021.acl-long.353",
}
@article{dusek-etal-2020-e2e,
    title = "Evaluating the state-of-the-art of End-to-End Natural Language Generation:
             The {E2E} {NLG} challenge",
    author = "Du{\\v{s}}ek, Ond{\\v{r}}ej and Novikova, Jekaterina and Rieser, Verena",
    journal = "Computer Speech {\\&} Language",
    volume = "59",
    year = "2020",
}
"""

_DESCRIPTION = """\
peftrun's scorers, as `peftrun eval` computes them.
e2e: the official E2E NLG challenge suite (tuetschek/e2e-metrics): BLEU and NIST (mteval Perl
default and the Python `-p` variant, BLEU_py / NIST_py), METEOR 1.5 (needs Java; None without it),
ROUGE_L and CIDEr (COCO, after PTB tokenisation), on the scorer's raw scale.
xsum: ROUGE-1/2/L F1 x100 (rouge-score, Porter stemmer, max over references), mean over instances.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one output per instance.
    references (list of list of str, or list of str): every reference of each instance (E2E has
        several), or one reference string per instance (XSum).
    dataset (str): "e2e" or "xsum"; defaults to the config name, e.g. evaluate.load(path, "xsum").
Returns:
    dict: metric name -> score, the dict `peftrun eval --json` prints for a split.
        e2e: BLEU, NIST, BLEU_py, NIST_py, METEOR, ROUGE_L, CIDEr; xsum: ROUGE-1, ROUGE-2, ROUGE-L.
Examples:
    >>> metric = evaluate.load(peftrun.metrics.evaluate_module_path())
    >>> metric.compute(predictions=["rain fell"], references=["rain fell"], dataset="xsum")
    {'ROUGE-1': 100.0, 'ROUGE-2': 100.0, 'ROUGE-L': 100.0}
"""

logger = evaluate.logging.get_logger(__name__)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PeftrunMetrics(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string", id="sequence")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # Several references per instance, or one string each (the first that fits is used).
            features=[
                datasets.Features({"predictions": text, "references": datasets.Sequence(text)}),
                datasets.Features({"predictions": text, "references": text}),
            ],
            reference_urls=[
                "https://github.com/tuetschek/e2e-metrics",
                "https://pypi.org/project/rouge-score/",
            ],
        )

    def _compute(self, predictions, references, dataset: str | None = None) -> dict:
        dataset = dataset or self.config_name
        if dataset not in SCORERS:
            raise ValueError(
                f"peftrun_metrics needs dataset='e2e' or 'xsum' (compute(..., dataset='e2e') or "
                f"evaluate.load(path, 'e2e')); got {dataset!r}"
            )
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        report = score(dataset, list(predictions), refs)
        for note in report.notes:  # `peftrun eval` prints these on stderr; here at INFO, not every call
            logger.info(note)
        return dict(report.scores)
