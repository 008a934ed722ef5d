from trainforge.methods.base import Method, register


@register
class FullFineTuning(Method):
    """Every weight trains; the artifact is a whole model folder."""

    name = "full"
    tasks = ("lm", "text-classification", "multi-task", "reward")
