"""Accuracy and F1 as `evaluate` metrics defined here, because `evaluate.load("accuracy")` fetches its script from
the Hub and this project must run offline. Same definitions as the Hub's scripts (scikit-learn underneath)."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, f1_score

_FEATURES = datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})


class Accuracy(evaluate.Metric):
    """Fraction of predictions equal to the reference label."""

    def _info(self):
        return evaluate.MetricInfo(description=self.__doc__, citation="", inputs_description="", features=_FEATURES)

    def _compute(self, predictions, references):
        return {"accuracy": float(accuracy_score(references, predictions))}


class F1(evaluate.Metric):
    """F1: of the positive class (label 1) with two labels, the macro average over labels with more."""

    def __init__(self, num_labels: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.num_labels = num_labels

    def _info(self):
        return evaluate.MetricInfo(description=self.__doc__, citation="", inputs_description="", features=_FEATURES)

    def _compute(self, predictions, references):
        if self.num_labels <= 2:
            return {"f1": float(f1_score(references, predictions, pos_label=1, average="binary"))}
        return {"f1": float(f1_score(references, predictions, labels=list(range(self.num_labels)), average="macro",
                                     zero_division=0))}


def classification_metrics(num_labels: int = 2) -> evaluate.CombinedEvaluations:
    """Accuracy and F1 (binary for two labels, macro for more) combined into one `evaluate` module."""
    return evaluate.combine([Accuracy(), F1(num_labels)])


_TEXT_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


class ExactMatch(evaluate.Metric):
    """Fraction of predicted texts identical to their reference (after stripping surrounding spaces)."""

    def _info(self):
        return evaluate.MetricInfo(description=self.__doc__, citation="", inputs_description="", features=_TEXT_FEATURES)

    def _compute(self, predictions, references):
        hits = sum(p.strip() == r.strip() for p, r in zip(predictions, references))
        return {"exact_match": hits / max(1, len(references))}


class ChrF(evaluate.Metric):
    """Corpus chrF (Popović 2015; character 6-grams, beta 2) as computed by sacrebleu, on a 0-100 scale."""

    def _info(self):
        return evaluate.MetricInfo(description=self.__doc__, citation="", inputs_description="", features=_TEXT_FEATURES)

    def _compute(self, predictions, references):
        from sacrebleu.metrics import CHRF

        return {"chrf": CHRF().corpus_score(list(predictions), [list(references)]).score}


class Bleu(evaluate.Metric):
    """Corpus BLEU (Papineni et al. 2002; 13a tokenization) as computed by sacrebleu, on a 0-100 scale."""

    def _info(self):
        return evaluate.MetricInfo(description=self.__doc__, citation="", inputs_description="", features=_TEXT_FEATURES)

    def _compute(self, predictions, references):
        from sacrebleu.metrics import BLEU

        return {"bleu": BLEU().corpus_score(list(predictions), [list(references)]).score}


def translation_metrics() -> evaluate.CombinedEvaluations:
    """Exact match, chrF and BLEU combined into one `evaluate` module."""
    return evaluate.combine([ExactMatch(), ChrF(), Bleu()])
