"""One aiohttp session per capture, opened by `async with` and closed after: OpenRouter's source and the
ledger's database each own one, so connections are reused across a day's requests and never leak."""

from __future__ import annotations

from typing import Self

import aiohttp


class OwnsSession:
    """`async with owner:` opens `open_session()`; `owner.session` is it, only inside the block."""

    _session: aiohttp.ClientSession | None = None

    def open_session(self) -> aiohttp.ClientSession:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._session = self.open_session()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, f"use {type(self).__name__} in `async with`"
        return self._session
