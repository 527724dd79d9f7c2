"""Errors of the training jobs: each says what is wrong with the input, before any work."""


class TrainingError(Exception):
    """A training, evaluation or batch job cannot run as asked."""


class DatasetError(TrainingError):
    """The labels file or the images folder does not match the data format."""
