class GradMixin:
    pass
