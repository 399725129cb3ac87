"""FriendshipService servicer (part): buddy lists, one-way requests, presence."""

from __future__ import annotations

from sqlalchemy.orm import Session

from befriend.server.api import auth, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.status import Context
from befriend.server.errors import InvalidArgument
from befriend.server.services import matching, pagination
from befriend.server.storage.matching import ACCEPTED, BLOCKED, BuddyView, MatchRepository
from befriend.v1 import common_pb2, friendship_pb2

MAX_STATUS_MESSAGE = 280


def _buddy(owner: str, v: BuddyView) -> friendship_pb2.Buddy:
    buddy_id = v.other_id or f"k{v.key}"
    msg = friendship_pb2.Buddy(
        name=f"users/{owner}/buddies/{buddy_id}",
        kind=v.kind,  # type: ignore[arg-type]
        user=f"users/{v.other_id}" if v.other_id else "",
        display_name=v.other_name,
        match=friendship_pb2.BuddyMatch(key=v.key_kind),  # type: ignore[arg-type]
        origin=v.origin,  # type: ignore[arg-type]
        create_time=convert.timestamp(v.created_at),
        update_time=convert.timestamp(v.updated_at),
    )
    if v.contact is not None:
        msg.phonebook_entry.CopyFrom(common_pb2.Contact.FromString(v.contact))
        if not msg.display_name:
            msg.display_name = msg.phonebook_entry.display_name
    return msg


class FriendshipServicer:
    """Implements part of FriendshipService; the rest answers UNIMPLEMENTED."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def ListBuddies(
        self, request: friendship_pb2.ListBuddiesRequest, context: Context
    ) -> friendship_pb2.ListBuddiesResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        kind = int(request.kind) or None
        scope = f"buddies:{me}:{kind}"
        page = pagination.page(request.page_size, request.page_token, scope)
        views, total = await self.backend.read(
            lambda s: MatchRepository(s).list_buddies(me, kind, page.offset, page.size)
        )
        return friendship_pb2.ListBuddiesResponse(
            buddies=[_buddy(me, v) for v in views],
            next_page_token=page.next_token(len(views), scope),
            total_size=total,
        )

    async def ListOneWayRequests(
        self, request: friendship_pb2.ListOneWayRequestsRequest, context: Context
    ) -> friendship_pb2.ListOneWayRequestsResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        pending = await self.backend.read(lambda s: MatchRepository(s).one_way_requests_to(me))
        return friendship_pb2.ListOneWayRequestsResponse(
            one_way_requests=[
                friendship_pb2.OneWayRequest(
                    name=f"users/{me}/oneWayRequests/{requester}",
                    requester=f"users/{requester}",
                    requester_display_name=name,
                    state=friendship_pb2.ONE_WAY_REQUEST_STATE_PENDING,
                    create_time=convert.timestamp(since),
                )
                for requester, name, since in pending
            ]
        )

    async def _answer(self, name: str, decision: int) -> tuple[str, str]:
        me = auth.require_user()
        requester = auth.resolve_name(name, "name", "oneWayRequests")

        def work(s: Session) -> None:
            matching.answer_one_way(
                MatchRepository(s), self.backend.registry, me, requester, decision, utcnow()
            )

        await self.backend.write(work)
        return me, requester

    async def AcceptOneWayRequest(
        self, request: friendship_pb2.AcceptOneWayRequestRequest, context: Context
    ) -> friendship_pb2.AcceptOneWayRequestResponse:
        me, requester = await self._answer(request.name, ACCEPTED)
        return friendship_pb2.AcceptOneWayRequestResponse(
            one_way_request=friendship_pb2.OneWayRequest(
                name=request.name,
                requester=f"users/{requester}",
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_ACCEPTED,
            ),
            buddy=friendship_pb2.Buddy(
                name=f"users/{me}/buddies/{requester}",
                kind=friendship_pb2.BUDDY_KIND_FULL,
                user=f"users/{requester}",
            ),
        )

    async def BlockOneWayRequest(
        self, request: friendship_pb2.BlockOneWayRequestRequest, context: Context
    ) -> friendship_pb2.BlockOneWayRequestResponse:
        me, requester = await self._answer(request.name, BLOCKED)
        return friendship_pb2.BlockOneWayRequestResponse(
            one_way_request=friendship_pb2.OneWayRequest(
                name=request.name,
                requester=f"users/{requester}",
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_BLOCKED,
            ),
            blocked_user=friendship_pb2.BlockedUser(
                name=f"users/{me}/blockedUsers/{requester}", user=f"users/{requester}"
            ),
        )

    async def SetPresence(
        self, request: friendship_pb2.SetPresenceRequest, context: Context
    ) -> friendship_pb2.SetPresenceResponse:
        me = auth.require_user()
        p = request.presence
        if len(p.status_message) > MAX_STATUS_MESSAGE:
            raise InvalidArgument.field(
                "presence.status_message", f"at most {MAX_STATUS_MESSAGE} characters"
            )
        if len(p.picture_uri) > 2048:
            raise InvalidArgument.field("presence.picture_uri", "at most 2048 characters")
        now = utcnow()
        await self.backend.write(
            lambda s: MatchRepository(s).set_presence(
                me, int(p.state), p.status_message, p.picture_uri, now
            )
        )
        out = friendship_pb2.Presence()
        out.CopyFrom(p)
        out.update_time.CopyFrom(convert.timestamp(now))
        return friendship_pb2.SetPresenceResponse(presence=out)

    async def GetBuddyPresence(
        self, request: friendship_pb2.GetBuddyPresenceRequest, context: Context
    ) -> friendship_pb2.GetBuddyPresenceResponse:
        """Presence of full buddies only: one-way and phonebook buddies never show it."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        wanted = {n.rsplit("/", 1)[-1] for n in request.buddies}
        rows = await self.backend.read(lambda s: MatchRepository(s).presence_of_full_buddies(me))
        return friendship_pb2.GetBuddyPresenceResponse(
            presences=[
                friendship_pb2.BuddyPresence(
                    buddy=f"users/{me}/buddies/{uid}",
                    user=f"users/{uid}",
                    presence=friendship_pb2.Presence(
                        state=state,  # type: ignore[arg-type]
                        status_message=message,
                        picture_uri=picture,
                        update_time=convert.timestamp(at),
                    ),
                )
                for uid, state, message, picture, at in rows
                if not wanted or uid in wanted
            ]
        )
