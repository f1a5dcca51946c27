"""SMS: a real gateway in production, reachable, accepting our credentials."""

from __future__ import annotations

from madoguchi.doctor import Context, Result, check, fail, ok


@check("sms.provider")
def sms_provider(ctx: Context) -> Result:
    sms = ctx.cfg.sms
    if sms.provider == "console":
        return fail("[sms] provider = console only writes to the development outbox: no "
                    "citizen gets an SMS", 'set [sms] provider = "kannel" (config/kannel/)')
    if sms.provider == "kannel" and not (sms.kannel_username and sms.kannel_password):
        return fail("[sms] kannel_username/kannel_password are not set",
                    "set them (password in MADOGUCHI_SMS_KANNEL_PASSWORD) as in the "
                    "sendsms-user group of kannel.conf")
    return ok(f"SMS provider {sms.provider}")


@check("sms.gateway", startup=False)
async def sms_gateway(ctx: Context) -> Result:
    from signalling.sms import PROVIDERS
    from signalling.sms.interfaces import GATEWAY_AUTH, SmsError

    cfg = ctx.cfg
    if cfg.sms.provider == "console":
        return ok("no gateway to reach (console provider)")
    factory = PROVIDERS.get(cfg.sms.provider)
    if factory is None:
        return fail(f"unknown [sms] provider {cfg.sms.provider!r}",
                    f"use one of {', '.join(sorted(PROVIDERS))}")
    provider = factory(cfg)
    try:
        await provider.check()
    except SmsError as exc:
        if exc.code == GATEWAY_AUTH:
            return fail(f"the gateway {cfg.sms.kannel_url} refused our credentials",
                        "make [sms] kannel_username/password match kannel.conf's "
                        "sendsms-user group")
        return fail(f"the gateway {cfg.sms.kannel_url} does not answer ({exc.code})",
                    "start Kannel (systemctl status kannel) and check [sms] kannel_url")
    finally:
        await provider.close()
    return ok(f"gateway {cfg.sms.kannel_url} answers and accepts our credentials")


@check("sms.template")
def sms_template(ctx: Context) -> Result:
    from madoguchi.config import ConfigError
    from signalling.sms.template import check_template

    try:
        check_template(ctx.cfg)
    except ConfigError as exc:
        return fail(str(exc), "shorten [sms] template or the public_url")
    return ok("the SMS text with a link fits one message (70 characters)")
