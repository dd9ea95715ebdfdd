"""Teachers: the models that play the agent (an offline deterministic one, and any OpenAI-compatible endpoint)."""

from __future__ import annotations

from distill.teachers.base import Teacher, TeacherCallError, TeacherReply, TeacherRequest, make_teacher

__all__ = ["Teacher", "TeacherCallError", "TeacherReply", "TeacherRequest", "make_teacher"]
