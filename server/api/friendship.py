"""FriendshipService servicer: buddy lists, one-way requests and blocks, presence, active
contacts, common contacts, the event stream and refresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import TypeVar, cast

from google.protobuf.message import Message
from sqlalchemy.orm import Session

from befriend.server.api import auth, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.status import Context
from befriend.server.errors import InvalidArgument, NotFound, PermissionDenied
from befriend.server.records import WEAK_DIGITS
from befriend.server.services import active_contacts, matching, pagination, refresh, retention
from befriend.server.services.accounts import get_user
from befriend.server.storage.addressbooks import AddressBookRepository
from befriend.server.storage.matching import (
    ACCEPTED,
    BLOCKED,
    FULL,
    WEAK_MATCH,
    ActiveProposal,
    BlockedView,
    BuddyView,
    MatchRepository,
)
from befriend.server.storage.repositories import AccountRepository
from befriend.server.storage.retention import BUDDY_EVENTS, RetentionRepository
from befriend.v1 import common_pb2, friendship_pb2

MAX_STATUS_MESSAGE = 280
M = TypeVar("M", bound=Message)
POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
PHONEBOOK_PREFIX = "k"  # buddy id of a phonebook buddy: "k{key}" (member ids are hex)


def _buddy(
    owner: str, v: BuddyView, presence: tuple[int, str, str, datetime] | None = None
) -> friendship_pb2.Buddy:
    """A buddy entry; ``presence`` (state, message, picture, time) only for full buddies."""
    buddy_id = v.other_id or f"{PHONEBOOK_PREFIX}{v.key}"
    msg = friendship_pb2.Buddy(
        name=f"users/{owner}/buddies/{buddy_id}",
        kind=v.kind,  # type: ignore[arg-type]
        user=f"users/{v.other_id}" if v.other_id else "",
        display_name=v.other_name,
        # Which key made a member match; a phonebook buddy matched no one (unset).
        match=(
            friendship_pb2.BuddyMatch(
                key=v.key_kind,  # type: ignore[arg-type]
                weak_suffix_digits=WEAK_DIGITS if v.key_kind == WEAK_MATCH else 0,
            )
            if v.other_id
            else None
        ),
        origin=v.origin,  # type: ignore[arg-type]
        create_time=convert.timestamp(v.created_at),
        update_time=convert.timestamp(v.updated_at),
    )
    if v.contact is not None:
        msg.phonebook_entry.CopyFrom(common_pb2.Contact.FromString(v.contact))
        if not msg.display_name:
            msg.display_name = msg.phonebook_entry.display_name
    if presence is not None and v.kind == FULL:
        msg.presence.CopyFrom(_presence(*presence))
    return msg


def _presence(state: int, message: str, picture: str, at: datetime) -> friendship_pb2.Presence:
    return friendship_pb2.Presence(
        state=state,  # type: ignore[arg-type]
        status_message=message,
        picture_uri=picture,
        update_time=convert.timestamp(at),
    )


def _blocked(owner: str, v: BlockedView) -> friendship_pb2.BlockedUser:
    return friendship_pb2.BlockedUser(
        name=f"users/{owner}/blockedUsers/{v.user_id}",
        user=f"users/{v.user_id}",
        display_name=v.display_name,
        block_time=convert.timestamp(v.blocked_at),
    )


def _buddy_ref(buddy_id: str) -> tuple[str | None, int]:
    """(member id, 0) or (None, key) for a phonebook buddy id "k{key}"."""
    digits = buddy_id.removeprefix(PHONEBOOK_PREFIX)
    if buddy_id.startswith(PHONEBOOK_PREFIX) and digits.isdigit() and int(digits) < 1 << 64:
        return None, int(digits)
    return buddy_id, 0


def _contact_numbers(contact: bytes) -> list[str]:
    c = common_pb2.Contact.FromString(contact)
    return [p.raw for p in (*c.mobile_numbers, *c.fixed_numbers) if p.raw]


class FriendshipServicer:
    """Implements FriendshipService."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def ListBuddies(
        self, request: friendship_pb2.ListBuddiesRequest, context: Context
    ) -> friendship_pb2.ListBuddiesResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        kind = int(request.kind) or None
        scope = f"buddies:{me}:{kind}"
        page = pagination.page(request.page_size, request.page_token, scope)

        def work(
            s: Session,
        ) -> tuple[list[BuddyView], int, dict[str, tuple[int, str, str, datetime]]]:
            repo = MatchRepository(s)
            views, total = matching.buddy_list(
                repo, self.backend.registry, me, kind, page.offset, page.size
            )
            full = [v.other_id for v in views if v.kind == FULL and v.other_id]
            return views, total, repo.presences(full)

        views, total, presences = await self.backend.read(work)
        return friendship_pb2.ListBuddiesResponse(
            buddies=[_buddy(me, v, presences.get(v.other_id or "")) for v in views],
            next_page_token=page.next_token(len(views), scope),
            total_size=total,
        )

    async def GetBuddy(
        self, request: friendship_pb2.GetBuddyRequest, context: Context
    ) -> friendship_pb2.GetBuddyResponse:
        """One entry of the caller's list, rendered as ListBuddies renders it."""
        me = auth.require_user()
        other, key = _buddy_ref(auth.resolve_name(request.name, "name", "buddies"))

        def work(
            s: Session,
        ) -> tuple[BuddyView | None, tuple[int, str, str, datetime] | None]:
            repo = MatchRepository(s)
            view = matching.get_buddy(repo, self.backend.registry, me, other, key)
            if view is None or view.kind != FULL or view.other_id is None:
                return view, None
            return view, repo.presence_of(view.other_id)

        view, presence = await self.backend.read(work)
        if view is None:
            raise NotFound(
                f"{request.name} is not on your buddy list", metadata={"resource": request.name}
            )
        return friendship_pb2.GetBuddyResponse(buddy=_buddy(me, view, presence))

    async def ListOneWayRequests(
        self, request: friendship_pb2.ListOneWayRequestsRequest, context: Context
    ) -> friendship_pb2.ListOneWayRequestsResponse:
        """Pending requests to the caller (answered ones leave the list)."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        pending_only = request.state in (0, friendship_pb2.ONE_WAY_REQUEST_STATE_PENDING)
        scope = f"requests:{me}"
        page = pagination.page(request.page_size, request.page_token, scope)
        pending = await self.backend.read(lambda s: MatchRepository(s).one_way_requests_to(me))
        items = pending[page.offset : page.offset + page.size] if pending_only else []
        return friendship_pb2.ListOneWayRequestsResponse(
            one_way_requests=[
                friendship_pb2.OneWayRequest(
                    name=f"users/{me}/oneWayRequests/{requester}",
                    requester=f"users/{requester}",
                    requester_display_name=name,
                    state=friendship_pb2.ONE_WAY_REQUEST_STATE_PENDING,
                    create_time=convert.timestamp(since),
                )
                for requester, name, since in items
            ],
            next_page_token=page.next_token(len(items), scope),
        )

    async def _answer(
        self,
        rpc: str,
        request: friendship_pb2.AcceptOneWayRequestRequest
        | friendship_pb2.BlockOneWayRequestRequest,
        decision: int,
        response_type: type[M],
        respond: Callable[[str, str, datetime], M],
    ) -> M:
        """Accept or block once: a retry with the same request_id gets the first answer."""
        me = auth.require_user()
        requester = auth.resolve_name(request.name, "name", "oneWayRequests")

        def work(s: Session) -> tuple[M, str | None]:
            now = utcnow()
            matching.answer_one_way(
                MatchRepository(s), self.backend.registry, me, requester, decision, now
            )
            return respond(me, requester, now), me

        return await self.backend.mutate(
            f"befriend.v1.FriendshipService/{rpc}", request, response_type, work
        )

    async def AcceptOneWayRequest(
        self, request: friendship_pb2.AcceptOneWayRequestRequest, context: Context
    ) -> friendship_pb2.AcceptOneWayRequestResponse:
        def respond(
            me: str, requester: str, at: datetime
        ) -> friendship_pb2.AcceptOneWayRequestResponse:
            return friendship_pb2.AcceptOneWayRequestResponse(
                one_way_request=friendship_pb2.OneWayRequest(
                    name=request.name,
                    requester=f"users/{requester}",
                    state=friendship_pb2.ONE_WAY_REQUEST_STATE_ACCEPTED,
                    answer_time=convert.timestamp(at),
                ),
                buddy=friendship_pb2.Buddy(
                    name=f"users/{me}/buddies/{requester}",
                    kind=friendship_pb2.BUDDY_KIND_FULL,
                    user=f"users/{requester}",
                ),
            )

        return await self._answer(
            "AcceptOneWayRequest",
            request,
            ACCEPTED,
            friendship_pb2.AcceptOneWayRequestResponse,
            respond,
        )

    async def BlockOneWayRequest(
        self, request: friendship_pb2.BlockOneWayRequestRequest, context: Context
    ) -> friendship_pb2.BlockOneWayRequestResponse:
        def respond(
            me: str, requester: str, at: datetime
        ) -> friendship_pb2.BlockOneWayRequestResponse:
            return friendship_pb2.BlockOneWayRequestResponse(
                one_way_request=friendship_pb2.OneWayRequest(
                    name=request.name,
                    requester=f"users/{requester}",
                    state=friendship_pb2.ONE_WAY_REQUEST_STATE_BLOCKED,
                    answer_time=convert.timestamp(at),
                ),
                blocked_user=friendship_pb2.BlockedUser(
                    name=f"users/{me}/blockedUsers/{requester}",
                    user=f"users/{requester}",
                    block_time=convert.timestamp(at),
                ),
            )

        return await self._answer(
            "BlockOneWayRequest",
            request,
            BLOCKED,
            friendship_pb2.BlockOneWayRequestResponse,
            respond,
        )

    async def ListBlockedUsers(
        self, request: friendship_pb2.ListBlockedUsersRequest, context: Context
    ) -> friendship_pb2.ListBlockedUsersResponse:
        """The members the caller blocked, most recent first."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        scope = f"blocked:{me}"
        page = pagination.page(request.page_size, request.page_token, scope)
        views, _ = await self.backend.read(
            lambda s: MatchRepository(s).blocked_by(me, page.offset, page.size)
        )
        return friendship_pb2.ListBlockedUsersResponse(
            blocked_users=[_blocked(me, v) for v in views],
            next_page_token=page.next_token(len(views), scope),
        )

    async def UnblockUser(
        self, request: friendship_pb2.UnblockUserRequest, context: Context
    ) -> friendship_pb2.UnblockUserResponse:
        """Lift a block; the pair is re-matched at once (a retry with the same request_id
        gets the first answer; a second unblock is NOT_FOUND)."""
        me = auth.require_user()
        blocked = auth.resolve_name(request.name, "name", "blockedUsers")

        def work(s: Session) -> tuple[friendship_pb2.UnblockUserResponse, str]:
            matching.unblock(MatchRepository(s), self.backend.registry, me, blocked, utcnow())
            return friendship_pb2.UnblockUserResponse(), me

        return await self.backend.mutate(
            "befriend.v1.FriendshipService/UnblockUser",
            request,
            friendship_pb2.UnblockUserResponse,
            work,
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
        wanted = {
            auth.resolve_name(n, f"buddies[{i}]", "buddies") for i, n in enumerate(request.buddies)
        }
        full, rows = await self.backend.read(
            lambda s: (
                MatchRepository(s).full_buddies(me),
                MatchRepository(s).presence_of_full_buddies(me),
            )
        )
        hidden = sorted(wanted - full)
        if hidden:
            raise PermissionDenied(
                f"users/{me}/buddies/{hidden[0]} is not a full buddy; presence is shared "
                "between full buddies only",
                metadata={"buddy": hidden[0]},
            )
        return friendship_pb2.GetBuddyPresenceResponse(
            presences=[
                friendship_pb2.BuddyPresence(
                    buddy=f"users/{me}/buddies/{uid}",
                    user=f"users/{uid}",
                    presence=_presence(state, message, picture, at),
                )
                for uid, state, message, picture, at in rows
                if not wanted or uid in wanted
            ]
        )

    # -- active contacts -----------------------------------------------------------------
    async def SubmitCommunicationLogs(
        self, request: friendship_pb2.SubmitCommunicationLogsRequest, context: Context
    ) -> friendship_pb2.SubmitCommunicationLogsResponse:
        me = auth.require_user()
        records = [
            active_contacts.LogRecord(
                e.phone_number[:64],
                int(e.source),
                e.event_time.ToDatetime(tzinfo=UTC) if e.HasField("event_time") else utcnow(),
                e.display_name[:200],
            )
            for e in request.entries
        ]

        def work(s: Session) -> tuple[friendship_pb2.SubmitCommunicationLogsResponse, str]:
            r = active_contacts.submit_logs(
                AccountRepository(s),
                MatchRepository(s),
                self.backend.registry,
                me,
                records,
                utcnow(),
            )
            return (
                friendship_pb2.SubmitCommunicationLogsResponse(
                    accepted_count=r.accepted,
                    distinct_number_count=r.distinct,
                    proposal_count=r.proposals,
                    rejections=[
                        friendship_pb2.CommunicationLogRejection(
                            entry_index=x.index,
                            field=x.field,
                            reason=common_pb2.ErrorReason.Value(f"ERROR_REASON_{x.reason}"),
                        )
                        for x in r.rejections
                    ],
                ),
                me,
            )

        return await self.backend.mutate(
            "befriend.v1.FriendshipService/SubmitCommunicationLogs",
            request,
            friendship_pb2.SubmitCommunicationLogsResponse,
            work,
        )

    async def ListActiveContactProposals(
        self, request: friendship_pb2.ListActiveContactProposalsRequest, context: Context
    ) -> friendship_pb2.ListActiveContactProposalsResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        scope = f"active:{me}"
        page = pagination.page(request.page_size, request.page_token, scope)
        found, members = await self.backend.read(
            lambda s: active_contacts.proposals(MatchRepository(s), me)
        )
        items = found[page.offset : page.offset + page.size]
        return friendship_pb2.ListActiveContactProposalsResponse(
            proposals=[_proposal(me, p, p.e164 in members) for p in items],
            next_page_token=page.next_token(len(items), scope),
        )

    async def ConfirmActiveContacts(
        self, request: friendship_pb2.ConfirmActiveContactsRequest, context: Context
    ) -> friendship_pb2.ConfirmActiveContactsResponse:
        me = auth.resolve_name(request.parent or "users/me", "parent")
        excluded = set()
        for i, name in enumerate(request.excluded_proposals):
            ident = auth.resolve_name(name, f"excluded_proposals[{i}]", "activeContactProposals")
            if not ident.isdigit():
                raise InvalidArgument.field(f"excluded_proposals[{i}]", "unknown proposal")
            excluded.add(int(ident))

        def work(s: Session) -> tuple[friendship_pb2.ConfirmActiveContactsResponse, str]:
            chosen, members = active_contacts.confirm(
                AccountRepository(s),
                AddressBookRepository(s),
                MatchRepository(s),
                self.backend.registry,
                me,
                excluded,
                _contact_bytes,
                utcnow(),
            )
            keys = {int(p.e164[1:]) for p in chosen}
            views, _ = matching.buddy_list(
                MatchRepository(s), self.backend.registry, me, None, 0, 10_000
            )
            return (
                friendship_pb2.ConfirmActiveContactsResponse(
                    buddies=[_buddy(me, v) for v in views if v.key in keys],
                    invitable_numbers=[
                        common_pb2.PhoneNumber(raw=p.raw, e164=p.e164)
                        for p in chosen
                        if p.e164 not in members
                    ],
                ),
                me,
            )

        return await self.backend.mutate(
            "befriend.v1.FriendshipService/ConfirmActiveContacts",
            request,
            friendship_pb2.ConfirmActiveContactsResponse,
            work,
        )

    # -- common contacts ---------------------------------------------------------------
    async def ListCommonContacts(
        self, request: friendship_pb2.ListCommonContactsRequest, context: Context
    ) -> friendship_pb2.ListCommonContactsResponse:
        """Numbers the caller's and a full buddy's books both hold, from the caller's book."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        if not request.other_user:
            raise InvalidArgument.field("other_user", "required: 'users/{user_id}'")
        other = auth.user_id_of(request.other_user, "other_user")
        if other == me:
            raise InvalidArgument.field("other_user", "must name another member")
        scope = f"common:{me}:{other}"
        page = pagination.page(request.page_size, request.page_token, scope)

        def work(s: Session) -> tuple[list[matching.CommonContact], int]:
            return matching.common_contacts(
                MatchRepository(s),
                self.backend.registry,
                me,
                other,
                get_user(AccountRepository(s), me).region_code,
                _contact_numbers,
                page.offset,
                page.size,
            )

        found, total = await self.backend.read(work)
        return friendship_pb2.ListCommonContactsResponse(
            common_contacts=[_common(me, c) for c in found],
            next_page_token=(
                page.next_token(page.size, scope) if page.offset + page.size < total else ""
            ),
            total_size=total,
        )

    # -- events and refresh -------------------------------------------------------------
    async def WatchEvents(
        self, request: friendship_pb2.WatchEventsRequest, context: Context
    ) -> AsyncIterator[friendship_pb2.WatchEventsResponse]:
        """Poll the event log; a batch per change, a heartbeat when idle."""
        me = auth.resolve_name(request.parent or "users/me", "parent")
        types = {int(t) for t in request.types}
        if request.cursor and not request.cursor.isdigit():
            raise InvalidArgument.field("cursor", "malformed cursor")
        cursor = int(request.cursor) if request.cursor else None
        if cursor is None:  # from now on (never from before the pruned part of the log)
            cursor = await self.backend.read(
                lambda s: max(
                    MatchRepository(s).last_event_seq(me),
                    RetentionRepository(s).watermark(BUDDY_EVENTS),
                )
            )
            checked = True
        else:
            checked = False
        idle = 0.0
        while True:

            def since(
                s: Session, after: int = cursor, check: bool = not checked
            ) -> list[tuple[int, int, str, datetime]]:
                events = MatchRepository(s).events(me, after)
                if check:  # the events first, then the watermark (services.retention)
                    retention.check_cursor(after, RetentionRepository(s).watermark(BUDDY_EVENTS))
                return events

            events = await self.backend.read(since)
            checked = True
            batch = [e for e in events if not types or e[1] in types]
            if events:
                cursor = events[-1][0]
            if batch or idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield friendship_pb2.WatchEventsResponse(
                    events=[_event(me, seq, kind, other, at) for seq, kind, other, at in batch],
                    cursor=str(cursor),
                )
            await asyncio.sleep(POLL_SECONDS)
            idle += POLL_SECONDS

    async def RefreshMatches(
        self, request: friendship_pb2.RefreshMatchesRequest, context: Context
    ) -> friendship_pb2.RefreshMatchesResponse:
        """Internal: re-match the named users now, or start a job over everyone."""
        users = [auth.user_id_of(name, f"users[{i}]") for i, name in enumerate(request.users)]
        now = utcnow()
        db, registry = self.backend.db, self.backend.registry
        if users:
            count = await self.backend.run(lambda: refresh.rematch_users(db, registry, users, now))
            return friendship_pb2.RefreshMatchesResponse(
                job_id="", user_count=count, start_time=convert.timestamp(now)
            )
        job_id = request.request_id or f"manual-{now:%Y%m%dT%H%M%S}"
        await self.backend.run(lambda: refresh.start(db, job_id, now))
        self.backend.spawn(lambda: refresh.run(db, registry, job_id, utcnow))
        count = await self.backend.read(lambda s: MatchRepository(s).user_count())
        return friendship_pb2.RefreshMatchesResponse(
            job_id=job_id, user_count=count, start_time=convert.timestamp(now)
        )


def _contact_bytes(name: str, e164: str) -> bytes:
    contact = common_pb2.Contact(display_name=name)
    contact.mobile_numbers.add(raw=e164, e164=e164)
    return contact.SerializeToString(deterministic=True)


def _proposal(
    owner: str, p: ActiveProposal, is_member: bool
) -> friendship_pb2.ActiveContactProposal:
    return friendship_pb2.ActiveContactProposal(
        name=f"users/{owner}/activeContactProposals/{p.id}",
        phone_number=common_pb2.PhoneNumber(raw=p.raw, e164=p.e164),
        display_name=p.display_name,
        interaction_count=p.interactions,
        last_interaction_time=convert.timestamp(p.last_seen),
        sources=[s for s in range(1, 6) if p.sources & (1 << s)],  # type: ignore[misc]
        is_member=is_member,
        in_network=not is_member,
        selected=True,
    )


def _common(owner: str, c: matching.CommonContact) -> friendship_pb2.CommonContact:
    name = common_pb2.Contact.FromString(c.contact).display_name if c.contact else ""
    return friendship_pb2.CommonContact(
        contact=f"users/{owner}/contacts/{c.entry_pk}",
        display_name=name,
        phone_number=common_pb2.PhoneNumber(raw=c.raw, e164=c.e164),
        user=f"users/{c.member}" if c.member else "",
    )


def _event(owner: str, seq: int, kind: int, other: str, at: datetime) -> friendship_pb2.BuddyEvent:
    event = friendship_pb2.BuddyEvent(
        cursor=str(seq),
        type=cast(friendship_pb2.BuddyEventType.ValueType, kind),
        event_time=convert.timestamp(at),
    )
    if kind == matching.EVENT_ONE_WAY_REQUEST:
        event.one_way_request.CopyFrom(
            friendship_pb2.OneWayRequest(
                name=f"users/{owner}/oneWayRequests/{other}",
                requester=f"users/{other}",
                state=friendship_pb2.ONE_WAY_REQUEST_STATE_PENDING,
            )
        )
    else:
        event.buddy.CopyFrom(
            friendship_pb2.Buddy(name=f"users/{owner}/buddies/{other}", user=f"users/{other}")
        )
    return event
