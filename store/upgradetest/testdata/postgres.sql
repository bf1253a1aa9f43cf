--
-- PostgreSQL database dump
--

\restrict MH9j8cvWBeFWbgIdJhSIGfoJdCITAQ320vGFQyZwwEaBOehGBiJ3lWmavQP3GdI

-- Dumped from database version 15.18 (Debian 15.18-0+deb12u1)
-- Dumped by pg_dump version 15.18 (Debian 15.18-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: boot_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.boot_events (
    seq bigint NOT NULL,
    node_id text NOT NULL,
    "time" bigint NOT NULL,
    mac text NOT NULL,
    ip text NOT NULL,
    proto text NOT NULL,
    kind text NOT NULL,
    file text NOT NULL,
    bytes bigint NOT NULL,
    size bigint NOT NULL,
    block_size integer NOT NULL,
    window_size integer NOT NULL,
    complete boolean NOT NULL,
    error text NOT NULL,
    options text NOT NULL
);


--
-- Name: boot_events_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.boot_events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.boot_events_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.events (
    seq bigint NOT NULL,
    "time" bigint NOT NULL,
    node_id text NOT NULL,
    actor text NOT NULL,
    kind text NOT NULL,
    from_state text NOT NULL,
    to_state text NOT NULL,
    reason text NOT NULL,
    message text NOT NULL
);


--
-- Name: events_seq_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.events ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.events_seq_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: images; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.images (
    name text NOT NULL,
    arch text NOT NULL,
    format text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    raw_size bigint DEFAULT 0 NOT NULL,
    raw_sha256 text DEFAULT ''::text NOT NULL,
    source text NOT NULL,
    created bigint NOT NULL
);


--
-- Name: interfaces; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.interfaces (
    mac text NOT NULL,
    node_id text NOT NULL
);


--
-- Name: leases; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.leases (
    ip text NOT NULL,
    mac text NOT NULL,
    subnet text NOT NULL,
    state text NOT NULL,
    expires bigint NOT NULL,
    hostname text DEFAULT ''::text NOT NULL
);


--
-- Name: nodes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.nodes (
    id text NOT NULL,
    name text DEFAULT ''::text NOT NULL,
    arch text DEFAULT ''::text NOT NULL,
    firmware text DEFAULT ''::text NOT NULL,
    client_arch integer DEFAULT 0 NOT NULL,
    state text NOT NULL,
    secure_boot boolean,
    uuid text DEFAULT ''::text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    kind text DEFAULT 'metal'::text NOT NULL,
    rack text DEFAULT ''::text NOT NULL,
    "position" integer DEFAULT 0 NOT NULL,
    tags text DEFAULT '[]'::text NOT NULL,
    owner text DEFAULT 'rackboot'::text NOT NULL,
    inventory bytea,
    gpu_models text DEFAULT '[]'::text NOT NULL,
    last_error text DEFAULT ''::text NOT NULL,
    state_changed bigint DEFAULT 0 NOT NULL
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    applied_at bigint NOT NULL
);


--
-- Name: tasks; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tasks (
    id text NOT NULL,
    node_id text NOT NULL,
    kind text NOT NULL,
    state text NOT NULL,
    params bytea,
    result bytea,
    error text NOT NULL,
    created bigint NOT NULL,
    updated bigint NOT NULL
);


--
-- Name: tokens; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.tokens (
    id text NOT NULL,
    hash text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    role text NOT NULL,
    user_name text NOT NULL,
    node_id text NOT NULL,
    node_state text NOT NULL,
    created bigint NOT NULL,
    expires bigint NOT NULL
);


--
-- Name: users; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.users (
    name text NOT NULL,
    role text NOT NULL,
    password_hash text NOT NULL,
    created bigint NOT NULL
);


--
-- Data for Name: boot_events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.boot_events (seq, node_id, "time", mac, ip, proto, kind, file, bytes, size, block_size, window_size, complete, error, options) FROM stdin;
1	da3c467a-e7cd-40c2-aaa3-bac983ad5865	1793613603123456789	52:54:00:aa:00:01		dhcp	discover	snponly.efi	0	-1	0	0	f		{"60":"PXEClient:Arch:00007:UNDI:003016","93":"7"}
2	da3c467a-e7cd-40c2-aaa3-bac983ad5865	1793613604123456789	52:54:00:aa:00:01	10.20.0.10	tftp	file	snponly.efi	1048576	1048576	1468	16	t		null
3	f20be605-89fe-4279-a65a-63f0031e5faa	1793613605123456789		10.21.0.20	http	file	/boot/arm64/initrd	4096	16777216	0	0	f	connection reset	null
\.


--
-- Data for Name: events; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.events (seq, "time", node_id, actor, kind, from_state, to_state, reason, message) FROM stdin;
1	1793614200123456789	da3c467a-e7cd-40c2-aaa3-bac983ad5865	user:admin	transition	discovered	inspecting	fixture step	
2	1793614260123456789	da3c467a-e7cd-40c2-aaa3-bac983ad5865	user:admin	transition	inspecting	available	fixture step	
3	1793614320123456789	f20be605-89fe-4279-a65a-63f0031e5faa	user:admin	transition	discovered	inspecting	fixture step	
4	1793614380123456789	f20be605-89fe-4279-a65a-63f0031e5faa	user:admin	transition	inspecting	failed	fixture step	
5	1793614800123456789		system	audit				token created
6	1793614860123456789	7c2a0420-c1af-4e60-b07c-d4ee34e3f10c	token:x	action			power on	ipmi
\.


--
-- Data for Name: images; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.images (name, arch, format, size, sha256, raw_size, raw_sha256, source, created) FROM stdin;
debian-13-amd64	x86_64	raw.zst	536870912	1f2e	4294967296	3d4c	https://images.example/debian-13.qcow2	1793615400123456789
ubuntu-arm	aarch64	raw	2147483648	5b6a	0		upload:ubuntu.img	1793615460123456789
\.


--
-- Data for Name: interfaces; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.interfaces (mac, node_id) FROM stdin;
52:54:00:aa:00:01	da3c467a-e7cd-40c2-aaa3-bac983ad5865
52:54:00:aa:00:02	f20be605-89fe-4279-a65a-63f0031e5faa
52:54:00:aa:00:03	7c2a0420-c1af-4e60-b07c-d4ee34e3f10c
\.


--
-- Data for Name: leases; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.leases (ip, mac, subnet, state, expires, hostname) FROM stdin;
10.20.0.10	52:54:00:aa:00:01	10.20.0.0/24	bound	4102444800000000000	gpu-01
10.20.0.11	52:54:00:aa:00:03	10.20.0.0/24	offered	4102444800000000000	
10.21.0.20	52:54:00:aa:00:02	10.21.0.0/24	bound	4102444800000000000	arm-01
10.20.0.150	52:54:00:aa:00:04	10.20.0.0/24	offered	4102444800000000000	
10.20.0.99			declined	4102444800000000000	
\.


--
-- Data for Name: nodes; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.nodes (id, name, arch, firmware, client_arch, state, secure_boot, uuid, first_seen, last_seen, kind, rack, "position", tags, owner, inventory, gpu_models, last_error, state_changed) FROM stdin;
7c2a0420-c1af-4e60-b07c-d4ee34e3f10c		x86_64	bios	0	discovered	f		1793613602123456789	1793613602123456789	metal		0	[]	rackboot	\N	[]		1793613602123456789
da3c467a-e7cd-40c2-aaa3-bac983ad5865	gpu-01	x86_64	uefi	7	available	t	4c4c4544004b10318035b2c04f333732	1793613600123456789	1793613600123456789	metal	r12	7	["gpu","a100"]	rackboot	\\x7b2276657273696f6e223a312c22637075223a7b2261726368223a227838365f3634222c226d6f64656c223a22414d4420455059432037373633222c22736f636b657473223a327d2c2267707573223a5b7b226d6f64656c223a224e564944494120413130302d53584d342d38304742222c226e756d615f6e6f6465223a317d5d7d	["NVIDIA A100-SXM4-80GB"]		1793614260123456789
f20be605-89fe-4279-a65a-63f0031e5faa	arm-01	aarch64	uefi	11	failed	\N		1793613601123456789	1793613660123456789	metal	r13	40	["arm"]	ironic	\\x7b2276657273696f6e223a312c22637075223a7b2261726368223a2261617263683634227d7d	[]	no disk found	1793614380123456789
\.


--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.schema_migrations (version, applied_at) FROM stdin;
1	1796118538
\.


--
-- Data for Name: tasks; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.tasks (id, node_id, kind, state, params, result, error, created, updated) FROM stdin;
f23a9ef6-5c03-4596-9cc6-08ad8c70fd34	da3c467a-e7cd-40c2-aaa3-bac983ad5865	inspect	done	\\x7b226275726e696e223a66616c73657d	\\x7b226469736b73223a327d		1793614260123456789	1793614440123456789
e95b3f95-89f9-4b30-845f-1177d4613eb4	f20be605-89fe-4279-a65a-63f0031e5faa	wipe	pending	\N	\N		1793614500123456789	1793614500123456789
dd1e401a-631a-4da8-a5e1-36c8b143e0e9	f20be605-89fe-4279-a65a-63f0031e5faa	burnin	failed	\\x7b22686f757273223a347d	\N	memory error on DIMM B2	1793614560123456789	1793614620123456789
\.


--
-- Data for Name: tokens; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.tokens (id, hash, kind, name, role, user_name, node_id, node_state, created, expires) FROM stdin;
tok-api	a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1	api	ci	readonly	admin			1793620800123456789	0
tok-session	b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2	session		tech	tech1			1793620800123456789	4102444800000000000
tok-agent	c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3	agent		agent		da3c467a-e7cd-40c2-aaa3-bac983ad5865	available	1793624400123456789	0
\.


--
-- Data for Name: users; Type: TABLE DATA; Schema: public; Owner: -
--

COPY public.users (name, role, password_hash, created) FROM stdin;
admin	admin	$2a$10$abcdefghijklmnopqrstuv	1793617200123456789
tech1	tech	$2a$10$zyxwvutsrqponmlkjihgfe	1793617201123456789
\.


--
-- Name: boot_events_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.boot_events_seq_seq', 3, true);


--
-- Name: events_seq_seq; Type: SEQUENCE SET; Schema: public; Owner: -
--

SELECT pg_catalog.setval('public.events_seq_seq', 6, true);


--
-- Name: boot_events boot_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.boot_events
    ADD CONSTRAINT boot_events_pkey PRIMARY KEY (seq);


--
-- Name: events events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.events
    ADD CONSTRAINT events_pkey PRIMARY KEY (seq);


--
-- Name: images images_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.images
    ADD CONSTRAINT images_pkey PRIMARY KEY (name);


--
-- Name: interfaces interfaces_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.interfaces
    ADD CONSTRAINT interfaces_pkey PRIMARY KEY (mac);


--
-- Name: leases leases_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.leases
    ADD CONSTRAINT leases_pkey PRIMARY KEY (ip);


--
-- Name: nodes nodes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.nodes
    ADD CONSTRAINT nodes_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: tasks tasks_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_pkey PRIMARY KEY (id);


--
-- Name: tokens tokens_hash_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_hash_key UNIQUE (hash);


--
-- Name: tokens tokens_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tokens
    ADD CONSTRAINT tokens_pkey PRIMARY KEY (id);


--
-- Name: users users_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.users
    ADD CONSTRAINT users_pkey PRIMARY KEY (name);


--
-- Name: boot_events_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX boot_events_node ON public.boot_events USING btree (node_id, seq);


--
-- Name: events_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX events_node ON public.events USING btree (node_id, seq);


--
-- Name: interfaces_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX interfaces_node ON public.interfaces USING btree (node_id);


--
-- Name: leases_mac; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX leases_mac ON public.leases USING btree (mac, subnet);


--
-- Name: nodes_first_seen; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX nodes_first_seen ON public.nodes USING btree (first_seen, id);


--
-- Name: nodes_name; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX nodes_name ON public.nodes USING btree (name) WHERE (name <> ''::text);


--
-- Name: tasks_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tasks_node ON public.tasks USING btree (node_id, created);


--
-- Name: tokens_node; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tokens_node ON public.tokens USING btree (node_id);


--
-- Name: tokens_user; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX tokens_user ON public.tokens USING btree (user_name);


--
-- Name: boot_events boot_events_node_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.boot_events
    ADD CONSTRAINT boot_events_node_id_fkey FOREIGN KEY (node_id) REFERENCES public.nodes(id) ON DELETE CASCADE;


--
-- Name: interfaces interfaces_node_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.interfaces
    ADD CONSTRAINT interfaces_node_id_fkey FOREIGN KEY (node_id) REFERENCES public.nodes(id) ON DELETE CASCADE;


--
-- Name: tasks tasks_node_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.tasks
    ADD CONSTRAINT tasks_node_id_fkey FOREIGN KEY (node_id) REFERENCES public.nodes(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--

\unrestrict MH9j8cvWBeFWbgIdJhSIGfoJdCITAQ320vGFQyZwwEaBOehGBiJ3lWmavQP3GdI

