"""The agent runtime: a model behind any OpenAI-compatible endpoint running inside LangChain's own agent.

Owns `build_agent` and `chat`. The agent is langchain-classic's `initialize_agent(CHAT_CONVERSATIONAL_REACT_DESCRIPTION)`
(ConversationalChatAgent) with `ConversationBufferWindowMemory(k=agent.memory_window)`, `max_iterations=agent.max_steps`,
`early_stopping_method="force"` ("generate" raises for this agent), `ChatOpenAI` from langchain-openai pointed at the
endpoint, and the configured tools (the retriever searches the run's index). A callback handler prints each action
and observation as they happen, and notes any step the strict validator would reject (LangChain's parser is lenient).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, TextIO

from distill.config import Config
from distill.endpoint import resolve_endpoint

__all__ = ["build_agent", "chat", "make_chat_model"]

_OBSERVATION_CHARS = 400


def make_chat_model(config: Config, model: str, base_url: str | None = None, *, temperature: float = 0.0) -> Any:
    """ChatOpenAI for `model` at `base_url` (else OPENAI_BASE_URL, else OpenAI; `distill.endpoint`)."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    endpoint = resolve_endpoint(base_url, needed_by=f"model {model!r}")
    return ChatOpenAI(
        model=model,
        base_url=endpoint.base_url,
        api_key=SecretStr(endpoint.api_key),
        temperature=temperature,
        max_retries=config.teacher.max_retries,
        timeout=config.teacher.timeout_s,
    )


def _printer(config: Config, out: TextIO) -> Any:
    from langchain_core.callbacks import BaseCallbackHandler

    from distill.formats.langchain_chat import LangChainChatFormat

    fmt = LangChainChatFormat(config)  # distill chat runs LangChain's agent only (build_agent checks the format)

    class ActionPrinter(BaseCallbackHandler):
        """Prints the agent's actions and the tools' observations like the walkthrough's notebook."""

        note: str | None = None  # the strict validator's note on the last answer, printed after what it refers to

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            generation = response.generations[0][0]
            info = getattr(generation, "generation_info", None) or {}
            verdict = fmt.check(generation.text, info.get("finish_reason"))
            self.note = None if verdict.ok else f"  (strict validator: {verdict.reason}: {verdict.detail})"

        def flush_note(self) -> None:
            if self.note:
                print(self.note, file=out)
            self.note = None

        def on_agent_action(self, action: Any, **kwargs: Any) -> None:
            print(f"> Action: {action.tool}\n  Action Input: {action.tool_input}", file=out)
            self.flush_note()

        def on_tool_end(self, output: Any, **kwargs: Any) -> None:
            text = str(getattr(output, "content", output))
            shown = text if len(text) <= _OBSERVATION_CHARS else text[:_OBSERVATION_CHARS] + f"... ({len(text)} chars)"
            print(f"  Observation: {shown}", file=out)

        def on_agent_finish(self, finish: Any, **kwargs: Any) -> None:
            print(f"> Final Answer: {finish.return_values.get('output')}", file=out)
            self.flush_note()

    return ActionPrinter()


def build_agent(config: Config, llm: Any, *, run: str | Path | None = None) -> Any:
    """LangChain's conversational-chat agent over the config's tools (the retriever over the run's index)."""
    from langchain_classic.agents import AgentType, initialize_agent
    from langchain_classic.memory import ConversationBufferWindowMemory
    from langchain_core._api.deprecation import LangChainDeprecationWarning

    from distill.agent.langchain_tools import langchain_tools
    from distill.agent.tools import ToolBox
    from distill.errors import DistillError
    from distill.generation.index import ChunkIndex
    from distill.run_folder import RunFolder, default_run_dir

    if config.agent.format != "langchain-chat":
        raise DistillError(
            f"distill chat runs LangChain's ConversationalChatAgent; this config's agent.format is {config.agent.format}",
            hint="use a config with agent.format: langchain-chat",
        )

    run_dir = Path(run) if run is not None else default_run_dir(config)
    needs_index = any(t.kind == "retriever" for t in config.tools)
    toolbox = ToolBox(config, ChunkIndex.load(RunFolder(run_dir).index) if needs_index else None)
    tools = langchain_tools(config, toolbox)  # LangChain / MCP (langchain-mcp-adapters) tools as they are
    with warnings.catch_warnings():  # this agent is deprecated in LangChain, and it is the runtime being served
        warnings.simplefilter("ignore", LangChainDeprecationWarning)
        memory = ConversationBufferWindowMemory(
            memory_key="chat_history", k=config.agent.memory_window, return_messages=True
        )
        return initialize_agent(
            tools,
            llm,
            agent=AgentType.CHAT_CONVERSATIONAL_REACT_DESCRIPTION,
            memory=memory,
            max_iterations=config.agent.max_steps,
            early_stopping_method="force",
            agent_kwargs={"system_message": config.agent.system_prompt} if config.agent.system_prompt else None,
        )


def _ask(agent: Any, question: str, printer: Any, out: TextIO) -> bool:
    import openai
    from langchain_core.exceptions import OutputParserException

    try:
        agent.invoke({"input": question}, config={"callbacks": [printer]})
    except (OutputParserException, ValueError) as exc:  # LangChain raises when even its lenient parser gives up
        printer.flush_note()
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"! the model's answer is not an agent action: {first[:300]}", file=out)
        return False
    except openai.APIError as exc:  # inside the agent: the endpoint is down, or refuses the key or the model
        raise _endpoint_error(exc, agent) from None
    return True


def _endpoint_error(exc: Exception, agent: Any) -> Exception:
    """A DistillError (one line in the CLI) for an endpoint that cannot be reached or refused the request."""
    import openai

    from distill.errors import DistillError

    llm = getattr(getattr(agent.agent, "llm_chain", None), "llm", None)
    url = getattr(llm, "openai_api_base", None) or "https://api.openai.com/v1"
    hint = "check --base-url (or OPENAI_BASE_URL), that the server is up, the model id and OPENAI_API_KEY"
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return DistillError(f"cannot reach the model endpoint at {url}: {type(cause).__name__}: {cause}", hint=hint)
    status = getattr(exc, "status_code", None)
    return DistillError(f"the model endpoint at {url} answered HTTP {status}: {str(exc)[:300]}", hint=hint)


def chat(
    config: Config,
    model: str,
    *,
    question: str | None = None,
    run: str | Path | None = None,
    base_url: str | None = None,
    temperature: float = 0.0,
    out: TextIO | None = None,
    inp: TextIO | None = None,
) -> int:
    """One question (`question`) or an interactive loop (until EOF, `exit` or `quit`); returns an exit code."""
    out = out or sys.stdout
    agent = build_agent(config, make_chat_model(config, model, base_url, temperature=temperature), run=run)
    printer = _printer(config, out)
    if question is not None:
        return 0 if _ask(agent, question, printer, out) else 1
    inp = inp or sys.stdin
    interactive = inp.isatty()
    print(f"distill chat: {model} as the {config.name} agent (exit, quit or Ctrl-D to leave)", file=out)
    while True:
        if interactive:
            print("you> ", end="", file=out, flush=True)
        line = inp.readline()
        if not line or line.strip() in ("exit", "quit"):
            return 0
        if line.strip():
            _ask(agent, line.strip(), printer, out)
