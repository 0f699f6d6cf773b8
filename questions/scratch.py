"""7.4-2 ResNet18 from scratch, at every lr."""
from questions.baselines import report_baseline
from runner import Question
from section7 import TORCH, baseline_result, train_resnets


def train_scratch(settings, data, reads, env):
    return baseline_result(data, train_resnets(settings, data, env, "scratch", None, "resize"))


QUESTION = Question("scratch", "7.4-2", "ResNet18 from scratch", TORCH, train_scratch, report_baseline)
