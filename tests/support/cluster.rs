//! A shared-storage cluster for the pool tests (issue 19): Dovecot servers on loopback
//! addresses of their own (127.0.0.11, .12, ...), all on the same ports, serving one mail root
//! and one set of users ([`cluster_user`] 0 to [`CLUSTER_USERS`] - 1, all with
//! [`CLUSTER_PASSWORD`]); and a [`Fleet`]: two Portcullis instances in front of them with the
//! same `pool` map, sharing a redis store under a key prefix of the test's own, each with its
//! admin endpoint.
//!
//! Which server served a session is asked of the server itself: after the login, `ID NIL` goes
//! through the proxy (a logged-in session is relayed untouched) to Dovecot, and each member
//! answers with its own address in an `x-host` field (`imap_id_send`). That is one round trip
//! inside the session: no log line to wait for, no doubt about which of a user's many logins a
//! log line belongs to, and it does not take the proxy's own word (`/sessions`) for where it
//! sent the user. (A greeting of its own per server would not do: the client sees the proxy's.)

use std::net::Ipv4Addr;
use std::ops::Range;

use super::redis::{key_prefix, redis_url};
use super::*;

/// How many users every member knows: `user0` to `user1199`.
pub const CLUSTER_USERS: usize = 1200;
/// Every cluster user's password.
pub const CLUSTER_PASSWORD: &str = "poolpw";

/// The name of cluster user `n`.
pub fn cluster_user(n: usize) -> String {
    format!("user{n}")
}

/// The loopback address of member `i`: 127.0.0.11 for the first.
pub fn member_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 11 + u8::try_from(i).expect("a small cluster"))
}

/// Dovecot servers sharing one mail root, each on an address of its own, all on the same ports.
/// Dropping it lets frozen members go on (so that they can be stopped) and stops them all.
pub struct Cluster {
    /// Member `i` listens on [`member_ip`]`(i)`.
    pub servers: Vec<Dovecot>,
    /// The ports of every member.
    pub ports: DovecotPorts,
    frozen: Vec<bool>,
    // Declared last: removed once the members are gone.
    _root: tempfile::TempDir,
}

impl Cluster {
    /// Starts `members` Dovecot servers (at most 4: 127.0.0.11 to 127.0.0.14) sharing a fresh
    /// mail root; each answers `ID` with its address.
    pub fn start(members: usize) -> Cluster {
        assert!((1..=4).contains(&members), "1 to 4 members");
        require_dovecot();
        let root = tempfile::Builder::new()
            .prefix("portcullis-cluster-")
            .tempdir()
            .expect("cluster tempdir");
        // The mail processes (not root) walk through it to the homes.
        fs::set_permissions(root.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let homes = root.path().join("home");
        fs::create_dir(&homes).expect("homes");
        let users: Vec<(String, String)> = (0..CLUSTER_USERS)
            .map(|n| (cluster_user(n), CLUSTER_PASSWORD.to_string()))
            .collect();
        let ports = DovecotPorts::free();
        let servers = (0..members)
            .map(|i| {
                let ip = member_ip(i);
                Dovecot::start_member(&ClusterMember {
                    ip,
                    ports,
                    homes: homes.clone(),
                    users: users.clone(),
                    extra_conf: format!("imap_id_send = name * x-host {ip}"),
                })
            })
            .collect();
        Cluster {
            servers,
            ports,
            frozen: vec![false; members],
            _root: root,
        }
    }

    /// `HOST:PORT` of member `i`'s IMAP service, as a pool names it.
    pub fn imap_server(&self, i: usize) -> String {
        format!("{}:{}", member_ip(i), self.ports.imap)
    }

    /// `HOST:PORT` of member `i`'s POP3 service.
    pub fn pop3_server(&self, i: usize) -> String {
        format!("{}:{}", member_ip(i), self.ports.pop3)
    }

    /// The member listening on `ip`.
    pub fn member_at(&self, ip: &str) -> Option<usize> {
        (0..self.servers.len()).find(|&i| member_ip(i).to_string() == ip)
    }

    /// How many IMAP connections member `i` has logged that never tried to log in (Dovecot's
    /// "imap-login: ... (no auth attempts ...)": an IMAP pool's health checks, which greet and
    /// log out), of those from `source` (`rip=`) when it is given.
    pub fn unauthenticated(&self, i: usize, source: Option<&str>) -> usize {
        let rip = source.map(|s| format!("rip={s},"));
        read_lossy(&self.servers[i].log)
            .lines()
            .filter(|l| l.contains("imap-login:") && l.contains("(no auth attempts"))
            .filter(|l| rip.as_ref().is_none_or(|r| l.contains(r.as_str())))
            .count()
    }

    /// Every member's log and start-up output, each under its address.
    pub fn logs(&self) -> impl Fn() -> String + 'static {
        let files: Vec<(Ipv4Addr, PathBuf, PathBuf)> = self
            .servers
            .iter()
            .map(|d| (d.ip, d.log.clone(), d.dir.join("dovecot.stderr")))
            .collect();
        move || {
            files
                .iter()
                .map(|(ip, log, stderr)| {
                    format!(
                        "--- dovecot {ip} log ({}):\n{}\n--- dovecot {ip} output:\n{}\n",
                        log.display(),
                        settled(log),
                        read_lossy(stderr)
                    )
                })
                .collect()
        }
    }

    /// Member `i` hangs: its master and every process under it get SIGSTOP. Its listening
    /// sockets stay, so a connection is accepted (by the kernel) and never greeted: the hung
    /// server of the issue, not a dead one.
    pub fn freeze(&mut self, i: usize) {
        let master = self.servers[i].pid().expect("member runs");
        // The master first: once it is stopped, it forks no new process under it.
        signal_pids("STOP", &[master]);
        signal_pids("STOP", &process_tree(master));
        self.frozen[i] = true;
    }

    /// Member `i` goes on (SIGCONT to it and every process under it).
    pub fn thaw(&mut self, i: usize) {
        let master = self.servers[i].pid().expect("member runs");
        signal_pids("CONT", &process_tree(master));
        self.frozen[i] = false;
    }

    /// Member `i` stops for good (its listening sockets close: connections are refused).
    pub fn stop(&mut self, i: usize) {
        if self.frozen[i] {
            self.thaw(i);
        }
        self.servers[i].stop();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            if self.frozen[i] {
                self.thaw(i);
            }
        }
    }
}

/// `kill -SIG PIDS` (failures ignored: a process may have ended in between).
fn signal_pids(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

/// `root` and every process under it, going by the parent ids in `/proc/PID/stat`.
fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = read_lossy(&entry.path().join("stat"));
        // "PID (COMM) STATE PPID ...": COMM may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        tree.extend(
            parents
                .iter()
                .filter(|(_, ppid)| *ppid == parent)
                .map(|(pid, _)| *pid),
        );
        next += 1;
    }
    tree
}

// ---------------------------------------------------------------------------------------------
// The fleet: two Portcullis instances with the same pool
// ---------------------------------------------------------------------------------------------

/// The pool both instances of a [`Fleet`] have, and what goes with it: the settings of
/// issue 19, with short intervals for tests.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Weight of each cluster member in the pool, in the cluster's order; 0 leaves the member
    /// out. A weight of 1 is written as `"HOST:PORT"`, another as `{ host, port, weight }`.
    pub weights: Vec<u32>,
    pub health_interval_ms: u64,
    pub health_timeout_ms: u64,
    pub down_after: u32,
    pub up_after: u32,
    pub sticky_ms: u64,
    pub kick_spread_ms: u64,
    /// `[limits]` (0: no cap).
    pub max_sessions_per_user: u32,
    pub max_sessions_per_user_address: u32,
    /// `[fleet] session_ttl_ms`, when given.
    pub session_ttl_ms: Option<u64>,
    /// A POP3 listener too, its pool the members' POP3 ports.
    pub pop3: bool,
    /// `[fleet] store`: the test run's redis unless a test has its own.
    pub store: String,
    /// `[fleet] store_prefix`: the test's own.
    pub prefix: String,
    /// Whole lines (each ending in a newline) added to `[listener.backend]`: how the
    /// listener reaches the servers (`tls`, `source`, ...). None by default.
    pub backend: String,
}

impl Pool {
    /// The pool over the members with these weights; checks every 100 ms, down after 2 failed
    /// checks, up after 2 good ones, sticky for 5 minutes, kicks spread over 2 s, no caps; the
    /// run's redis under a fresh key prefix.
    pub fn new(weights: &[u32]) -> Pool {
        Pool {
            weights: weights.to_vec(),
            health_interval_ms: 200,
            health_timeout_ms: 2_000,
            down_after: 2,
            up_after: 2,
            sticky_ms: 300_000,
            kick_spread_ms: 2_000,
            max_sessions_per_user: 0,
            max_sessions_per_user_address: 0,
            session_ttl_ms: None,
            pop3: false,
            store: redis_url().to_string(),
            prefix: key_prefix(),
            backend: String::new(),
        }
    }

    /// The longest a hung server may take to be found down: `down_after` checks, each given
    /// its interval and its timeout, and a second of slack for a loaded machine.
    pub fn down_within(&self) -> Duration {
        let check = self.health_interval_ms + self.health_timeout_ms;
        Duration::from_millis(u64::from(self.down_after) * check + 1_000)
    }

    /// The `servers = [...]` of the pool over `port` on each member.
    fn servers(&self, port: u16) -> String {
        let entries: Vec<String> = self
            .weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w > 0)
            .map(|(i, w)| match w {
                1 => format!("\"{}:{port}\"", member_ip(i)),
                w => format!(
                    "{{ host = \"{}\", port = {port}, weight = {w} }}",
                    member_ip(i)
                ),
            })
            .collect();
        format!("[{}]", entries.join(", "))
    }

    /// A listener on 127.0.0.1:`port` whose back end is the pool over `backend_port`.
    fn listener(&self, protocol: &str, port: u16, backend_port: u16) -> String {
        format!(
            "[[listener]]\nprotocol = \"{protocol}\"\nbind = [\"127.0.0.1:{port}\"]\n\
             [listener.backend]\nhost = \"\"\n{backend}\
             [listener.map]\nkind = \"pool\"\nservers = {servers}\n\
             health_interval_ms = {}\nhealth_timeout_ms = {}\ndown_after = {}\nup_after = {}\n\
             sticky_ms = {}\nkick_spread_ms = {}\n\n",
            self.health_interval_ms,
            self.health_timeout_ms,
            self.down_after,
            self.up_after,
            self.sticky_ms,
            self.kick_spread_ms,
            servers = self.servers(backend_port),
            backend = self.backend,
        )
    }

    /// One instance's configuration.
    pub fn config(&self, cluster: &Cluster, ports: &InstancePorts) -> String {
        let mut toml = format!(
            "[log]\ndestination = \"-\"\n\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\n\
             [fleet]\nstore = \"{store}\"\nstore_prefix = \"{prefix}\"\n",
            admin = ports.admin,
            store = self.store,
            prefix = self.prefix,
        );
        if let Some(ttl) = self.session_ttl_ms {
            toml += &format!("session_ttl_ms = {ttl}\n");
        }
        toml += &format!(
            "\n[limits]\nmax_sessions_per_user = {}\nmax_sessions_per_user_address = {}\n\n",
            self.max_sessions_per_user, self.max_sessions_per_user_address
        );
        toml += &self.listener("imap", ports.imap, cluster.ports.imap);
        if let Some(pop3) = ports.pop3 {
            toml += &self.listener("pop3", pop3, cluster.ports.pop3);
        }
        toml
    }
}

/// Where one instance listens.
#[derive(Debug, Clone, Copy)]
pub struct InstancePorts {
    pub imap: u16,
    pub pop3: Option<u16>,
    pub admin: u16,
}

/// One Portcullis instance of a [`Fleet`].
pub struct Instance {
    pub proxy: Proxy,
    pub ports: InstancePorts,
    /// Its pool, as its configuration file has it now.
    pub pool: Pool,
}

/// Two Portcullis instances with the same pool and store (or each with a pool of its own:
/// [`Fleet::start_each`]).
pub struct Fleet {
    pub instances: Vec<Instance>,
    /// The first instance's pool (the same as the other's but with [`Fleet::start_each`]).
    pub pool: Pool,
}

impl Fleet {
    /// Starts two instances with `pool` in front of `cluster`; panics with an instance's
    /// output (why it refused its configuration), its configuration and the members' logs
    /// when one does not come up.
    pub fn start(cluster: &Cluster, pool: Pool) -> Fleet {
        Self::start_each(cluster, vec![pool.clone(), pool])
    }

    /// Starts one instance per pool, in their order: views that differ (a rolling change of
    /// the servers, a listener of its own). Sharing the store and its prefix, or not, is the
    /// pools' to say.
    pub fn start_each(cluster: &Cluster, pools: Vec<Pool>) -> Fleet {
        assert!(!pools.is_empty(), "a fleet of no instance");
        let pool = pools[0].clone();
        let instances = pools
            .into_iter()
            .map(|pool| Self::instance(cluster, pool))
            .collect();
        Fleet { instances, pool }
    }

    fn instance(cluster: &Cluster, pool: Pool) -> Instance {
        let ports = InstancePorts {
            imap: free_port(),
            pop3: pool.pop3.then(free_port),
            admin: free_port(),
        };
        let toml = pool.config(cluster, &ports);
        let members = cluster.logs();
        let _logs = LogsOnPanic(|| format!("configuration:\n{toml}\n{}", members()));
        let mut wait: Vec<u16> = vec![ports.imap, ports.admin];
        wait.extend(ports.pop3);
        let proxy = Proxy::start_toml(&toml, &wait);
        Instance { proxy, ports, pool }
    }

    /// Instance `i` gets `pool` in its configuration file (on the same ports), then
    /// `portcullis reload --config FILE`: that command's output.
    pub fn reload(&mut self, i: usize, cluster: &Cluster, pool: Pool) -> Output {
        let instance = &mut self.instances[i];
        let file = instance.proxy.config.clone().expect("a config file");
        fs::write(&file, pool.config(cluster, &instance.ports)).expect("write the configuration");
        instance.pool = pool;
        if i == 0 {
            self.pool = self.instances[0].pool.clone();
        }
        self.cli(i, &["reload"])
    }

    /// Instance `i`.
    pub fn at(&self, i: usize) -> &Instance {
        &self.instances[i]
    }

    /// Every instance's output, each under its number (for failure messages).
    pub fn logs(&self) -> impl Fn() -> String + 'static {
        let files: Vec<PathBuf> = self.instances.iter().map(|i| i.proxy.log.clone()).collect();
        move || {
            files
                .iter()
                .enumerate()
                .map(|(n, log)| {
                    format!(
                        "--- portcullis #{n} ({}):\n{}\n",
                        log.display(),
                        settled(log)
                    )
                })
                .collect()
        }
    }

    /// `portcullis ARGS --config FILE` with instance `i`'s configuration file.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        let config = self.instances[i]
            .proxy
            .config
            .as_ref()
            .expect("a config file");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().expect("UTF-8 path")]);
        run_portcullis(&all)
    }

    /// Instance `i`'s `GET /backends`.
    pub fn backends(&self, i: usize) -> Vec<serde_json::Value> {
        let body = admin::get(self.instances[i].ports.admin, "/backends");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/backends: {e}: {body}"))
    }

    /// Instance `i`'s row for `server` (`HOST:PORT`) in `/backends`.
    pub fn backend(&self, i: usize, server: &str) -> Option<serde_json::Value> {
        self.backends(i).into_iter().find(|b| b["server"] == server)
    }

    /// Instance `i`'s `GET /metrics`.
    pub fn metrics(&self, i: usize) -> String {
        admin::get(self.instances[i].ports.admin, "/metrics")
    }

    /// SIGKILL to instance `i`; returns once it is gone.
    pub fn kill(&mut self, i: usize) {
        let proxy = &mut self.instances[i].proxy;
        proxy.signal("KILL");
        assert!(
            proxy.wait_exit(Duration::from_secs(5)).is_some(),
            "portcullis #{i} outlived SIGKILL"
        );
    }
}

/// The value of the metric sample `name{...}` whose labels hold every one of `labels`
/// (`server="127.0.0.11:10143"`, ...); None when there is none.
pub fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.rsplit_once('}')?;
        labels
            .iter()
            .all(|l| set.split(',').any(|s| s == *l))
            .then(|| value.trim().parse().ok())?
    })
}

/// Polls `probe` every 20 ms until it gives an answer; panics saying `what` (and the logs
/// `logs` gives) after `timeout`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    logs: &dyn Fn() -> String,
    mut probe: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(answer) = probe() {
            return answer;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {timeout:?}\n{}", logs());
        }
        sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions through the fleet
// ---------------------------------------------------------------------------------------------

/// An IMAP login through a proxy's `port` from `source` (a 127.x.y.z): the connection and the
/// tagged answer to `a LOGIN`, whatever it is.
pub fn imap_try_login(port: u16, source: &str, user: &str, password: &str) -> (Client, String) {
    let stream = connect_from(source, port)
        .unwrap_or_else(|e| panic!("connect to {port} from {source}: {e}"));
    let mut client = Client::from_stream(stream);
    client.expect_line("* OK");
    client.send_line(&format!("a LOGIN \"{user}\" \"{password}\""));
    let answer = client
        .read_until_tagged("a")
        .pop()
        .expect("a tagged answer");
    (client, answer)
}

/// A POP3 login (USER, PASS) through a proxy's `port` from `source`: the connection and the
/// answer to PASS (or to USER, when that is refused).
pub fn pop3_try_login(port: u16, source: &str, user: &str, password: &str) -> (Client, String) {
    let stream = connect_from(source, port)
        .unwrap_or_else(|e| panic!("connect to {port} from {source}: {e}"));
    let mut client = Client::from_stream(stream);
    client.expect_line("+OK");
    client.send_line(&format!("USER {user}"));
    let answer = client.read_line();
    if !answer.starts_with("+OK") {
        return (client, answer);
    }
    client.send_line(&format!("PASS {password}"));
    let answer = client.read_line();
    (client, answer)
}

/// A logged-in IMAP session of a cluster user through `port` (from 127.0.0.1) and the member
/// serving it; panics when the login fails.
pub fn imap_session(cluster: &Cluster, port: u16, user: &str) -> (Client, usize) {
    imap_session_from(cluster, port, "127.0.0.1", user)
}

/// As [`imap_session`], from `source`.
pub fn imap_session_from(
    cluster: &Cluster,
    port: u16,
    source: &str,
    user: &str,
) -> (Client, usize) {
    let (mut client, answer) = imap_try_login(port, source, user, CLUSTER_PASSWORD);
    assert!(
        answer.starts_with("a OK"),
        "login of {user} through {port}: {answer}"
    );
    let member = served_by(cluster, &mut client);
    (client, member)
}

/// The member serving a logged-in IMAP session: its answer to `ID NIL` names it.
pub fn served_by(cluster: &Cluster, client: &mut Client) -> usize {
    client.send_line("i ID NIL");
    let lines = client.read_until_tagged("i");
    let host = lines
        .iter()
        .find_map(|l| l.split_once("\"x-host\" \"")?.1.split('"').next())
        .unwrap_or_else(|| panic!("no x-host in the answer to ID: {lines:?}"));
    cluster
        .member_at(host)
        .unwrap_or_else(|| panic!("x-host {host} is no member"))
}

/// Ends a session with LOGOUT, reading the answer (so that the session has ended on the
/// proxy's side when this returns, as far as the client can tell).
pub fn imap_logout(mut client: Client) {
    client.send_line("z LOGOUT");
    client.read_until_tagged("z");
}

/// Where each of `users` lands: one login each (LOGIN, ID, LOGOUT), user `n` through instance
/// `n % 2`, on `threads` threads at a time. The members, in the order of `users`.
pub fn place_users(
    cluster: &Cluster,
    fleet: &Fleet,
    users: Range<usize>,
    threads: usize,
) -> Vec<usize> {
    let ports: Vec<u16> = fleet.instances.iter().map(|i| i.ports.imap).collect();
    let all: Vec<usize> = users.collect();
    let mut placed = vec![usize::MAX; all.len()];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let (all, ports) = (&all, &ports);
                scope.spawn(move || {
                    (t..all.len())
                        .step_by(threads)
                        .map(|k| {
                            let n = all[k];
                            let port = ports[n % ports.len()];
                            let (client, member) = imap_session(cluster, port, &cluster_user(n));
                            imap_logout(client);
                            (k, member)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for worker in workers {
            for (k, member) in worker.join().expect("a placing thread failed") {
                placed[k] = member;
            }
        }
    });
    placed
}
