"""predict_batch's command line parses (Django adds --version to every command)."""

from training.management.commands.predict_batch import Command


def test_the_command_line_parses_with_a_shard_and_a_model_version():
    parser = Command().create_parser("manage.py", "predict_batch")
    arguments = ["--input=t.parquet", "--images=i", "--output=o.parquet", "--shard=1/4"]
    options = parser.parse_args([*arguments, "--model-version", "3"])
    assert options.shard == "1/4" and options.version == 3
