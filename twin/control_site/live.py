"""Pages that keep themselves current: a change token per page and a small polling script.

A control room leaves the dashboard open for hours; a page that only changes on
reload hides the hold that happened a minute ago. Each page's changing part sits
in ``<div id="live">``; the inline script asks the page's JSON endpoint every
few seconds "has anything changed since token T?". The server answers from a
few cheap aggregate queries (no page is rendered unless something changed), and
sends the re-rendered fragment only when the token moved. The fragment is made
by the same Python that makes the page, so the first view and the updates
cannot disagree. Forms (a hold request being typed) sit outside the live part.

The page says when it last heard from the control site, and says so in red
when it cannot reach it: a frozen screen must not look like a quiet fleet.
Without script the page still works; it is then current as of its last load.
"""

from __future__ import annotations

import hashlib
from html import escape

from twin.clock import wall_seconds
from twin.control_site.store import Store

__all__ = ["SCRIPT", "batch_token", "live_region", "overview_token"]

#: Polls ``data-api?since=TOKEN`` every ``data-every`` seconds; swaps the fragment on change.
SCRIPT = """<script>(function(){
const live=document.getElementById('live'),note=document.getElementById('refreshed');
const every=1000*Number(live.dataset.every||2);
async function poll(){
 try{
  const api=live.dataset.api,join=api.indexOf('?')<0?'?':'&';
  const r=await fetch(api+join+'since='+encodeURIComponent(live.dataset.token),
                      {cache:'no-store',credentials:'same-origin'});
  if(r.status===401){location.reload();return;}  // signed out: the page goes to sign-in
  if(!r.ok)throw new Error('HTTP '+r.status);
  const j=await r.json();
  if(j.html!==undefined){live.innerHTML=j.html;live.dataset.token=j.token;}
  note.textContent='live: checked '+new Date().toLocaleTimeString();note.className='ok';
 }catch(e){
  note.textContent='NOT UPDATING since '+new Date().toLocaleTimeString()+
    ': control site unreachable ('+e.message+')';note.className='bad';
 }
 setTimeout(poll,every);
}
setTimeout(poll,every);
})();</script>"""


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def overview_token(store: Store) -> str:
    """Changes whenever anything the overview shows changes (states, flags, heads, sites,
    requests, quarantined messages)."""
    return _digest(
        store.query(
            "SELECT (SELECT count(*) FROM batches), (SELECT max(updated_at) FROM batches), "
            "(SELECT count(*) FROM chain_flags), (SELECT max(received_at) FROM heads), "
            "(SELECT max(at) FROM sites), (SELECT max(last_at) FROM quarantine), "
            "(SELECT sum(count) FROM quarantine), (SELECT count(*) FROM requests)"
        ),
        # data ages, stale flags and overruns move on with the clock (and a new site key
        # is seen within the minute)
        int(wall_seconds() // 60),
    )


def batch_token(store: Store, site: str, batch: str) -> str:
    """Changes whenever anything one batch's page shows changes (its state, its events:
    an alarm acknowledged, a command; its flags, its head, the requests made for it)."""
    return _digest(
        store.query(
            "SELECT (SELECT max(updated_at) FROM batches WHERE site=? AND batch=?), "
            "(SELECT max(online) FROM batches WHERE site=? AND batch=?), "
            "(SELECT count(*) FROM chain_flags WHERE site=? AND batch=?), "
            "(SELECT max(received_at) FROM heads WHERE site=? AND batch=?), "
            "(SELECT max(seq) FROM events WHERE site=? AND batch=?), "
            "(SELECT count(*) FROM requests WHERE site=? AND batch=?)",
            (site, batch) * 6,
        ),
        int(wall_seconds() // 60),
    )


def live_region(api: str, token: str, every_s: float, inner: str) -> str:
    """The page's changing part, tagged with where and how often to ask for changes."""
    return (
        f"<p id='refreshed' class='ok'>live: updates every {every_s:g} s</p>"
        f"<div id='live' data-api='{escape(api)}' data-token='{escape(token)}' "
        f"data-every='{every_s:g}'>{inner}</div>{SCRIPT}"
    )
