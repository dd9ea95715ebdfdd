"""LangChain objects for tests/test_langchain_tools.py: a real vector store with a deterministic local embedding."""

from __future__ import annotations

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.tools import BaseTool, tool
from langchain_core.vectorstores import InMemoryVectorStore

from tests.conftest import CORPUS

_STORE: list[InMemoryVectorStore] = []


def store() -> InMemoryVectorStore:
    """The corpus' paragraphs in an InMemoryVectorStore (DeterministicFakeEmbedding: no download)."""
    if not _STORE:
        texts = [p.strip() for f in sorted(CORPUS.glob("*.md")) for p in f.read_text(encoding="utf-8").split("\n\n")
                 if len(p.split()) > 12]
        vectors = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
        vectors.add_texts(texts, metadatas=[{"n": i} for i in range(len(texts))])
        _STORE.append(vectors)
    return _STORE[0]


def make_retriever():  # a zero-argument factory returning a BaseRetriever
    return store().as_retriever(search_kwargs={"k": 2})


@tool
def word_count(text: str) -> int:
    """Counts the words of a text."""
    return len(text.split())


@tool
def add(a: int, b: int) -> int:
    """Adds two integers."""
    return a + b


def make_word_count() -> BaseTool:
    return word_count


NOT_A_TOOL = 42
