"""The curation stages in the order of the flow: the one place a stage is registered.

The spec's `stages:` keys, the pipeline's stage folders (OUT/stages/NN_<name>/, NN being
the position here, from 1) and the report all follow this list. A new stage is its
module plus one line here.
"""

from __future__ import annotations

from curation.stages.base import Stage
from curation.stages.decontaminate import DecontaminateStage
from curation.stages.exact_dedup import ExactDedupStage
from curation.stages.fuzzy_dedup import FuzzyDedupStage
from curation.stages.heuristics import HeuristicsStage
from curation.stages.language import LanguageStage
from curation.stages.normalize import NormalizeStage
from curation.stages.quality import QualityStage
from curation.stages.select import SelectStage

STAGES: tuple[type[Stage], ...] = (
    NormalizeStage,
    LanguageStage,
    HeuristicsStage,
    QualityStage,
    ExactDedupStage,
    FuzzyDedupStage,
    DecontaminateStage,
    SelectStage,
)

