"""AccountService servicer: validate the envelope, call the domain, convert the answer."""

from __future__ import annotations

from sqlalchemy.orm import Session

from befriend.server.api import auth, convert
from befriend.server.api.backend import Backend, utcnow
from befriend.server.api.status import Context
from befriend.server.services import accounts, matching, pagination
from befriend.server.services.matching import ORIGIN_REGISTRATION
from befriend.server.storage.matching import MatchRepository
from befriend.server.storage.repositories import AccountRepository
from befriend.v1 import account_pb2, account_pb2_grpc

SERVICE = "befriend.v1.AccountService"


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    async def Register(
        self, request: account_pb2.RegisterRequest, context: Context
    ) -> account_pb2.RegisterResponse:
        cmd = accounts.RegisterCommand(
            display_name=request.display_name,
            phone_numbers=list(request.phone_numbers),
            email_addresses=list(request.email_addresses),
            im_ids=[(im.kind, im.id) for im in request.im_ids],
            region_code=request.region_code,
            time_zone=request.time_zone,
            device=(
                accounts.DeviceInput(
                    request.device.device_id, request.device.sim_id, request.device.platform
                )
                if request.HasField("device")
                else None
            ),
        )

        def work(s: Session) -> tuple[account_pb2.RegisterResponse, str | None]:
            now = utcnow()
            user, token = accounts.register(AccountRepository(s), cmd, now)
            matching.match_user(
                MatchRepository(s), self.backend.registry, user.id, now, ORIGIN_REGISTRATION
            )
            resp = account_pb2.RegisterResponse(user=convert.user(user), access_token=token)
            return resp, user.id

        return await self.backend.mutate(
            f"{SERVICE}/Register", request, account_pb2.RegisterResponse, work
        )

    async def GetMe(
        self, request: account_pb2.GetMeRequest, context: Context
    ) -> account_pb2.GetMeResponse:
        me = auth.require_user()
        user = await self.backend.read(lambda s: accounts.get_user(AccountRepository(s), me))
        return account_pb2.GetMeResponse(user=convert.user(user))

    async def GetUser(
        self, request: account_pb2.GetUserRequest, context: Context
    ) -> account_pb2.GetUserResponse:
        user_id = auth.resolve_name(request.name, "name")
        user = await self.backend.read(lambda s: accounts.get_user(AccountRepository(s), user_id))
        return account_pb2.GetUserResponse(user=convert.user(user))

    async def UpdateProfile(
        self, request: account_pb2.UpdateProfileRequest, context: Context
    ) -> account_pb2.UpdateProfileResponse:
        me = auth.resolve_name(request.user.name or "users/me", "user.name")
        update = accounts.ProfileUpdate(
            paths=frozenset(request.update_mask.paths),
            display_name=request.user.display_name,
            region_code=request.user.region_code,
            time_zone=request.user.time_zone,
            profile=convert.profile_to_dict(request.user.profile),
        )

        def work(s: Session) -> tuple[account_pb2.UpdateProfileResponse, str | None]:
            repo = AccountRepository(s)
            user = accounts.update_profile(repo, me, request.user.etag, update, utcnow())
            return account_pb2.UpdateProfileResponse(user=convert.user(user)), me

        return await self.backend.mutate(
            f"{SERVICE}/UpdateProfile", request, account_pb2.UpdateProfileResponse, work
        )

    async def ChangePhoneNumber(
        self, request: account_pb2.ChangePhoneNumberRequest, context: Context
    ) -> account_pb2.ChangePhoneNumberResponse:
        me = auth.require_user()

        def work(s: Session) -> tuple[account_pb2.ChangePhoneNumberResponse, str | None]:
            now = utcnow()
            user, released = accounts.change_phone_number(
                AccountRepository(s),
                me,
                request.old_phone_number,
                request.new_phone_number,
                request.etag,
                now,
            )
            # The new number may complete others' matches; the old one's are dropped and
            # its holders get it back as a phonebook buddy.
            repo = MatchRepository(s)
            matching.match_user(repo, self.backend.registry, me, now, ORIGIN_REGISTRATION)
            matching.rematch_holders(
                repo, self.backend.registry, [released.key], now, ORIGIN_REGISTRATION
            )
            return account_pb2.ChangePhoneNumberResponse(user=convert.user(user)), me

        return await self.backend.mutate(
            f"{SERVICE}/ChangePhoneNumber", request, account_pb2.ChangePhoneNumberResponse, work
        )

    async def RegisterDevice(
        self, request: account_pb2.RegisterDeviceRequest, context: Context
    ) -> account_pb2.RegisterDeviceResponse:
        me = auth.require_user()
        device = accounts.DeviceInput(
            request.device.device_id, request.device.sim_id, request.device.platform
        )

        def work(s: Session) -> tuple[account_pb2.RegisterDeviceResponse, str | None]:
            record = accounts.register_device(AccountRepository(s), me, device, utcnow())
            return account_pb2.RegisterDeviceResponse(device=convert.device(record)), me

        return await self.backend.mutate(
            f"{SERVICE}/RegisterDevice", request, account_pb2.RegisterDeviceResponse, work
        )

    async def ListDevices(
        self, request: account_pb2.ListDevicesRequest, context: Context
    ) -> account_pb2.ListDevicesResponse:
        me = auth.require_user()
        page = pagination.page(request.page_size, request.page_token, f"devices:{me}")
        records = await self.backend.read(
            lambda s: AccountRepository(s).list_devices(me, page.offset, page.size)
        )
        return account_pb2.ListDevicesResponse(
            devices=[convert.device(r) for r in records],
            next_page_token=page.next_token(len(records), f"devices:{me}"),
        )

    async def DeleteAccount(
        self, request: account_pb2.DeleteAccountRequest, context: Context
    ) -> account_pb2.DeleteAccountResponse:
        me = auth.require_user()

        def work(s: Session) -> account_pb2.DeleteAccountResponse:
            accounts.delete_account(AccountRepository(s), me, request.etag, utcnow())
            return account_pb2.DeleteAccountResponse()

        # Not recorded for idempotency: every row of the user goes, including that record.
        # A retry after success fails UNAUTHENTICATED (the token is gone), which is the
        # truthful answer.
        return await self.backend.write(work)
