"""The documented-commands runner itself: how it reads pages, and that a command printing
something else than its page shows fails the comparison."""

from pathlib import Path

import pytest

from tests.support.documented_commands import (
    Mismatch,
    Shell,
    blocks_of,
    compare_output,
    marking_problems,
    run_commands,
)


def page(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_console_blocks_run_and_marked_blocks_do_not(tmp_path):
    blocks = blocks_of(
        page(
            tmp_path,
            "```console\n$ echo one \\\n  two\none two\n$ true\n```\n\n"
            "<!-- not-run: needs a cluster -->\n```sh\nkubectl apply -k .\n```\n",
        )
    )
    assert [b.runnable for b in blocks] == [True, False]
    assert [(c.text, c.expected) for c in blocks[0].commands] == [
        ("echo one \\\n  two", "one two\n"),
        ("true", ""),
    ]
    assert blocks[1].not_run == "needs a cluster"
    assert marking_problems(blocks) == []


def test_a_shell_block_neither_run_nor_marked_is_a_problem(tmp_path):
    blocks = blocks_of(page(tmp_path, "```sh\nmake run\n```\n\n```\ncurl -s http://x/\n```\n"))
    assert len(marking_problems(blocks)) == 2
    assert blocks_of(page(tmp_path, '```json\n{"a": 1}\n```\n'))[0].is_shell is False


def test_a_command_that_prints_something_else_fails(tmp_path):
    blocks = blocks_of(page(tmp_path, "```console\n$ echo bye\nhello\n$ echo same\nsame\n```\n"))
    shell = Shell(cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    try:
        outcomes = [problem for _, _, problem in run_commands(blocks, shell=shell, replacements={})]
    finally:
        shell.close()
    assert outcomes[1] is None
    assert outcomes[0] is not None and "hello" in outcomes[0] and "bye" in outcomes[0]


def test_a_failing_command_fails_and_variables_last_from_one_command_to_the_next(tmp_path):
    blocks = blocks_of(
        page(tmp_path, "```console\n$ NAME=camera\n$ echo $NAME\ncamera\n$ false\n```\n")
    )
    shell = Shell(cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    try:
        outcomes = [problem for _, _, problem in run_commands(blocks, shell=shell, replacements={})]
    finally:
        shell.close()
    assert outcomes[:2] == [None, None]
    assert outcomes[2] is not None and "exit status 1" in outcomes[2]


def test_addresses_of_the_page_are_replaced_by_the_test_services(tmp_path):
    blocks = blocks_of(page(tmp_path, "```console\n$ echo 127.0.0.1:8000\n127.0.0.1:8000\n```\n"))
    shell = Shell(cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    try:
        [(_, _, problem)] = run_commands(
            blocks, shell=shell, replacements={"127.0.0.1:8000": "127.0.0.1:5555"}
        )
    finally:
        shell.close()
    assert problem is None


ANSWER = (
    '{"classification":"Egyptian cat","confidence":0.7995,"processing_time":0.04,'
    '"predictions":[{"label":"Egyptian cat","confidence":0.7995}],"cached":false,'
    '"image_sha256":"4f6b","counters_started_at":"2026-12-06T19:53:16.683681Z"}'
)


def test_json_is_compared_as_data_within_the_stated_tolerance():
    shown = """{"classification": "Egyptian cat", "confidence": 0.80, "processing_time": 9.5,
      "predictions": [{"label": "Egyptian cat", "confidence": 0.7995}], "cached": false,
      "image_sha256": "4f6b", "counters_started_at": "2025-01-01T00:00:00Z"}"""
    compare_output(shown, ANSWER)


@pytest.mark.parametrize(
    "change",
    [
        ('"Egyptian cat", "confidence": 0.80', '"tabby", "confidence": 0.80'),  # a label
        ('"confidence": 0.80', '"confidence": 0.70'),  # beyond the tolerance
        ('"cached": false', '"cached": true'),
        ('"image_sha256": "4f6b"', '"image_sha256": "4f6c"'),  # a hash, exactly
        ('"cached": false,', '"cached": false, "tags": [],'),  # a field the answer lacks
        ('"cached": false,', ""),  # a field the page lacks
    ],
)
def test_json_that_differs_fails(change):
    shown = (
        '{"classification": "Egyptian cat", "confidence": 0.80, "processing_time": 0.01, '
        '"predictions": [{"label": "Egyptian cat", "confidence": 0.7995}], "cached": false, '
        '"image_sha256": "4f6b", "counters_started_at": "2025-01-01T00:00:00Z"}'
    )
    with pytest.raises(Mismatch):
        compare_output(shown.replace(*change), ANSWER)


def test_an_ellipsis_stands_for_items_members_text_and_lines():
    compare_output('{"predictions": [...], ...}', ANSWER)
    compare_output(
        '{"access": "eyJ...", "refresh": "eyJ..."}', '{"access":"eyJa","refresh":"eyJb"}'
    )
    compare_output("Started\n...\nDone in ... s", "Started\nnoise\nmore noise\nDone in 3.2 s")
    with pytest.raises(Mismatch):
        compare_output("Started\n...\nDone", "Started\nnoise")
    with pytest.raises(Mismatch):
        compare_output('{"predictions": [...]}', ANSWER)  # other members are not allowed


def test_an_http_head_is_compared_by_line_then_its_body():
    answer = (
        "HTTP/1.1 415 Unsupported Media Type\r\nServer: gunicorn\r\nContent-Type: application/json"
        '\r\n\r\n{"error":{"code":"unsupported_image_type","message":"Not an image."}}'
    )
    shown = (
        "HTTP/1.1 415 Unsupported Media Type\n...\nContent-Type: application/json\n\n"
        '{"error": {"code": "unsupported_image_type", "message": "Not an image."}}'
    )
    compare_output(shown, answer)
    with pytest.raises(Mismatch):
        compare_output(shown.replace("415 Unsupported", "400 Unsupported"), answer)
    with pytest.raises(Mismatch):
        compare_output(shown, answer.replace("unsupported_image_type", "undecodable_image"))
