"""distill.endpoint: one resolution of the service's base URL and key, one error text, for every command."""

from __future__ import annotations

import pytest

from distill.endpoint import NO_KEY, OPENAI_URL, resolve_base_url, resolve_endpoint
from distill.errors import DistillError, FinetuneError, TeacherError

LOCAL = "http://127.0.0.1:8080/v1"


def test_the_given_url_wins_then_openai_base_url_then_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert resolve_endpoint().base_url is None and resolve_endpoint().url == OPENAI_URL
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env.example/v1")
    assert resolve_base_url() == "http://env.example/v1"
    endpoint = resolve_endpoint(LOCAL)
    assert (endpoint.base_url, endpoint.api_key, endpoint.has_key) == (LOCAL, "sk-test", True)
    assert resolve_endpoint().base_url == "http://env.example/v1"
    assert "sk-test" not in repr(endpoint)


def test_a_local_endpoint_needs_no_key_unless_the_caller_does(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = resolve_endpoint(LOCAL)
    assert endpoint.api_key == NO_KEY and not endpoint.has_key
    monkeypatch.setenv("OPENAI_BASE_URL", LOCAL)
    assert resolve_endpoint().base_url == LOCAL
    with pytest.raises(FinetuneError) as caught:
        resolve_endpoint(key_required=True, needed_by="fine-tuning", error=FinetuneError, alternative="or not")
    assert caught.value.message == "fine-tuning: OPENAI_API_KEY is not set"
    assert caught.value.hint is not None and caught.value.hint.endswith("; or not")


def test_no_key_and_no_url_is_one_error_text_everywhere(make_config) -> None:
    from distill.evaluation.chat import make_chat_model
    from distill.teachers.openai_teacher import OpenAITeacher

    with pytest.raises(DistillError) as eval_like:
        resolve_endpoint(needed_by="model 'a'")
    assert eval_like.value.message == "model 'a': OPENAI_API_KEY is not set and no --base-url was given"
    assert "export OPENAI_API_KEY=" in str(eval_like.value.hint) and "a local server needs no key" in str(
        eval_like.value.hint)
    config = make_config()
    with pytest.raises(DistillError) as chat:
        make_chat_model(config, "a")
    assert chat.value.message == eval_like.value.message and chat.value.hint == eval_like.value.hint
    with pytest.raises(TeacherError) as teacher:
        OpenAITeacher(make_config(teacher={"provider": "openai", "base_url": LOCAL}))  # the teacher needs a real key
    assert teacher.value.message == "teacher.provider is openai: OPENAI_API_KEY is not set"
    assert "teacher.base_url" in str(teacher.value.hint) and "teacher.provider: offline" in str(teacher.value.hint)
