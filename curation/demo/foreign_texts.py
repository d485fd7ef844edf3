"""Hand-written sentences in five languages for the demo's non-English web pages.

The language stage needs real prose in other languages to reject; these sentences were
written for this project (everyday topics, no source text) and are sampled into documents
by `curation.demo.web`. Each language has enough distinct sentences that documents built
from different samples share little text, so they are not near-duplicates of each other.
"""

from __future__ import annotations

import re

_FOREIGN_PROSE: dict[str, str] = {
    "es": """
Cada mañana la panadería de la esquina abre sus puertas antes de que salga el sol. Los
vecinos hacen cola en silencio mientras el olor del pan recién hecho llena la calle. En el
mercado del sábado se venden tomates, pimientos y quesos que llegan de los pueblos cercanos.
Mi abuela siempre decía que una buena sopa necesita tiempo, paciencia y muy poca sal. El
tren regional tarda casi tres horas en cruzar la sierra, pero el paisaje compensa el viaje.
Durante el invierno los ríos bajan con fuerza y las montañas se cubren de nieve durante
semanas. La biblioteca municipal organiza talleres de lectura para niños todos los martes
por la tarde. Aprender a programar no es tan difícil si uno practica un poco cada día y no
tiene miedo de equivocarse. Los estudiantes discutieron durante horas sobre la mejor manera
de organizar el proyecto final. En verano las plazas se llenan de gente que busca la sombra
de los árboles y una bebida fría. El museo de la ciudad guarda mapas antiguos que muestran
cómo cambió el puerto a lo largo de los siglos. Nadie sabía quién había pintado el mural,
aunque todos tenían su propia teoría al respecto. Para llegar al faro hay que caminar por un
sendero estrecho que bordea los acantilados. La orquesta ensayó la sinfonía completa dos
veces antes del concierto de la noche. Los agricultores esperan la lluvia de la primavera
porque sin ella la cosecha será pobre este año. Mi hermano arregló la bicicleta vieja con
piezas que encontró en el garaje de un amigo. Las ciudades modernas necesitan más parques,
transporte público eficiente y calles pensadas para caminar. El profesor explicó la lección
con ejemplos tan sencillos que hasta los más distraídos la entendieron. Después de la
tormenta, el cielo quedó limpio y se podían ver las estrellas con total claridad. En la
cocina de aquel restaurante pequeño trabajan cuatro personas que se conocen desde la
infancia. Un buen libro puede acompañarnos durante años y enseñarnos algo nuevo cada vez que
lo volvemos a leer. La carretera de la costa estuvo cerrada varios días porque las olas
habían dañado el muro de protección. Los informes del ayuntamiento indican que el consumo de
agua bajó de forma notable el último verano. Cuando llegamos al pueblo, las campanas de la
iglesia anunciaban el comienzo de las fiestas.
""",
    "de": """
Am frühen Morgen ist der Bahnhof noch fast leer, nur ein paar Pendler warten auf den ersten
Zug. Meine Nachbarin pflegt ihren Garten mit großer Sorgfalt und erntet jedes Jahr mehr
Gemüse, als sie essen kann. Im Herbst färben sich die Wälder rot und gelb, und auf den Wegen
liegt überall nasses Laub. Die Stadtbibliothek hat ihre Öffnungszeiten verlängert, damit
auch Berufstätige abends noch Bücher ausleihen können. Wer eine neue Sprache lernen möchte,
sollte jeden Tag ein wenig üben und keine Angst vor Fehlern haben. Der alte Fischer erzählte
uns von Stürmen, die er vor vielen Jahren auf der Nordsee erlebt hatte. Auf dem Wochenmarkt
gibt es frisches Brot, Käse aus der Region und Äpfel von den Höfen am Fluss. Nach dem langen
Winter freuen sich alle auf die ersten warmen Tage im Park und am See. Die Ingenieure haben
die Brücke gründlich geprüft, bevor sie wieder für den Verkehr freigegeben wurde. Unser
Lehrer erklärte die Aufgabe so geduldig, dass am Ende wirklich jeder in der Klasse sie
verstanden hatte. In der kleinen Werkstatt hinter dem Haus repariert mein Onkel Uhren,
Radios und manchmal sogar Fahrräder. Das Konzert begann mit einer ruhigen Melodie, die
langsam lauter wurde und schließlich den ganzen Saal füllte. Viele Städte investieren
inzwischen in Radwege, weil immer mehr Menschen mit dem Fahrrad zur Arbeit fahren. Der
Wanderweg führt durch ein enges Tal, über zwei Holzbrücken und schließlich hinauf zu einer
Berghütte. Bei dem Gewitter gestern Abend fiel in mehreren Straßen für einige Stunden der
Strom aus. Meine Großmutter hat ihre Rezepte nie aufgeschrieben, sondern alles im Kopf
behalten und nach Gefühl gekocht. Die Studierenden arbeiteten die ganze Nacht an ihrem
Bericht, um ihn rechtzeitig abgeben zu können. Im Museum kann man alte Landkarten sehen, die
zeigen, wie sich der Hafen im Laufe der Jahrhunderte verändert hat. Ein gutes Programm ist
nicht nur korrekt, sondern auch leicht zu lesen und einfach zu ändern. Am Wochenende fahren
viele Familien aufs Land, um Freunde zu besuchen oder einfach spazieren zu gehen. Die
Zeitung berichtete ausführlich über die neuen Pläne für den Bau einer Schule im Norden der
Stadt. Niemand wusste genau, warum die Glocken an diesem Morgen schon so früh zu läuten
begannen. Wenn der Nebel über dem Fluss liegt, sieht die Altstadt aus wie auf einem alten
Gemälde. Zum Abschluss des Festes gab es ein Feuerwerk, das man noch in den umliegenden
Dörfern sehen konnte.
""",
    "fr": """
Chaque matin, le boulanger du quartier prépare des croissants bien avant le lever du soleil.
Les habitants du village se retrouvent le dimanche sur la place pour discuter et boire un
café. Au marché, on trouve des fruits de saison, des fromages de la région et du pain encore
chaud. Ma grand-mère disait toujours qu'une bonne soupe demande du temps, de la patience et
très peu de sel. Le train qui traverse les montagnes met presque quatre heures, mais la vue
sur les vallées est magnifique. Pendant l'hiver, la rivière gèle parfois et les enfants
viennent regarder la glace depuis le pont. La bibliothèque municipale propose des ateliers
d'écriture pour les adolescents tous les mercredis. Apprendre à programmer demande surtout
de la régularité et l'envie de comprendre ses propres erreurs. Les étudiants ont passé la
soirée à corriger leur rapport avant de le rendre au professeur. En été, les terrasses des
cafés sont pleines et les rues restent animées jusque tard dans la nuit. Le musée de la
ville conserve des cartes anciennes qui montrent comment le port s'est agrandi au fil des
siècles. Personne ne savait qui avait peint la fresque, mais chacun avait son idée sur la
question. Pour atteindre le phare, il faut suivre un sentier étroit qui longe les falaises
au-dessus de la mer. L'orchestre a répété la symphonie entière deux fois avant le concert du
soir. Les agriculteurs attendent la pluie du printemps, car sans elle la récolte sera maigre
cette année. Mon frère a réparé la vieille bicyclette avec des pièces trouvées dans le
garage d'un ami. Les villes modernes ont besoin de plus de parcs, de transports publics
efficaces et de rues où l'on peut marcher. Le professeur a expliqué la leçon avec des
exemples si simples que même les plus distraits ont compris. Après l'orage, le ciel s'est
dégagé et l'on pouvait voir les étoiles avec une clarté étonnante. Dans la cuisine de ce
petit restaurant travaillent quatre personnes qui se connaissent depuis l'enfance. Un bon
livre peut nous accompagner pendant des années et nous apprendre quelque chose à chaque
lecture. La route de la côte est restée fermée plusieurs jours parce que les vagues avaient
abîmé le mur de protection. Selon le rapport de la mairie, la consommation d'eau a nettement
diminué l'été dernier. Quand nous sommes arrivés au village, les cloches de l'église
annonçaient le début de la fête.
""",
    "it": """
Ogni mattina il fornaio del quartiere accende il forno molto prima che sorga il sole. La
domenica gli abitanti del paese si ritrovano in piazza per chiacchierare e bere un caffè. Al
mercato si trovano frutta di stagione, formaggi della zona e pane ancora caldo. Mia nonna
diceva sempre che un buon sugo ha bisogno di tempo, pazienza e ingredienti semplici. Il
treno che attraversa le montagne impiega quasi quattro ore, ma il panorama ripaga il
viaggio. Durante l'inverno il fiume si ingrossa e le colline intorno alla città si coprono
di neve. La biblioteca comunale organizza ogni giovedì un laboratorio di lettura per i
bambini delle scuole. Imparare a programmare richiede soprattutto costanza e la voglia di
capire i propri errori. Gli studenti hanno lavorato tutta la notte per finire la relazione
prima della scadenza. D'estate le piazze si riempiono di gente che cerca l'ombra degli
alberi e una bibita fresca. Il museo della città conserva antiche mappe che mostrano come il
porto sia cambiato nei secoli. Nessuno sapeva chi avesse dipinto l'affresco, ma ognuno aveva
la propria teoria. Per raggiungere il faro bisogna percorrere un sentiero stretto che
costeggia le scogliere. L'orchestra ha provato l'intera sinfonia due volte prima del
concerto della sera. I contadini aspettano la pioggia di primavera, perché senza di essa il
raccolto sarà scarso. Mio fratello ha sistemato la vecchia bicicletta con dei pezzi trovati
nel garage di un amico. Le città moderne hanno bisogno di più parchi, di trasporti pubblici
efficienti e di strade pensate per i pedoni. Il professore ha spiegato la lezione con esempi
così semplici che anche i più distratti l'hanno capita. Dopo il temporale il cielo si è
schiarito e si potevano vedere le stelle con grande nitidezza. Nella cucina di quel piccolo
ristorante lavorano quattro persone che si conoscono fin da bambini. Un buon libro può
accompagnarci per anni e insegnarci qualcosa di nuovo ogni volta che lo rileggiamo. La
strada lungo la costa è rimasta chiusa per diversi giorni perché le onde avevano danneggiato
il muro. Secondo il comune, il consumo di acqua è diminuito in modo evidente durante
l'ultima estate. Quando siamo arrivati in paese, le campane della chiesa annunciavano
l'inizio della festa.
""",
    "nl": """
Elke ochtend opent de bakker op de hoek zijn winkel al voordat de zon opkomt. De buren staan
geduldig in de rij terwijl de geur van vers brood door de straat trekt. Op de zaterdagmarkt
verkopen boeren uit de omgeving kaas, groenten en appels van hun eigen land. Mijn oma zei
altijd dat een goede soep vooral tijd en geduld nodig heeft, en heel weinig zout. De trein
naar het noorden doet er bijna drie uur over, maar het uitzicht over de polders is prachtig.
In de winter vriezen de sloten soms dicht en dan gaan de kinderen na school schaatsen. De
openbare bibliotheek organiseert elke woensdagmiddag een voorleesuurtje voor jonge kinderen.
Wie wil leren programmeren, moet vooral elke dag een beetje oefenen en niet bang zijn om
fouten te maken. De studenten hebben de hele avond aan hun verslag gewerkt om het op tijd in
te kunnen leveren. In de zomer zitten de terrassen vol en blijft het tot laat in de avond
druk in de binnenstad. Het museum van de stad bewaart oude kaarten die laten zien hoe de
haven door de eeuwen heen is gegroeid. Niemand wist wie de muurschildering had gemaakt, maar
iedereen had er wel een eigen verhaal over. Om bij de vuurtoren te komen, moet je een smal
pad volgen dat langs de duinen en het strand loopt. Het orkest heeft de hele symfonie twee
keer gerepeteerd voordat het concert van vanavond begon. De boeren hopen op regen in het
voorjaar, want zonder water wordt de oogst dit jaar erg mager. Mijn broer heeft de oude
fiets gerepareerd met onderdelen die hij in de schuur van een vriend vond. Moderne steden
hebben meer parken nodig, goed openbaar vervoer en straten waar je prettig kunt lopen. De
leraar legde de les uit met zulke eenvoudige voorbeelden dat zelfs de minst oplettende
leerlingen het begrepen. Na het onweer klaarde de lucht helemaal op en konden we de sterren
weer duidelijk zien. In de keuken van dat kleine restaurant werken vier mensen die elkaar al
sinds hun jeugd kennen. Een goed boek kan je jarenlang bijblijven en je bij elke nieuwe
lezing iets anders leren. De weg langs de kust was dagenlang afgesloten omdat de golven de
dijk hadden beschadigd. Volgens het rapport van de gemeente is het waterverbruik afgelopen
zomer flink gedaald. Toen we in het dorp aankwamen, luidden de klokken van de kerk het begin
van het feest in.
""",
}


def _sentences(prose: str) -> tuple[str, ...]:
    return tuple(re.split(r"(?<=[.!?])\s+|(?<=[.!?][”\"])\s+", " ".join(prose.split())))


FOREIGN_SENTENCES: dict[str, tuple[str, ...]] = {
    lang: _sentences(prose) for lang, prose in _FOREIGN_PROSE.items()
}

# English sentences with accented loanwords and typographic punctuation, so that a UTF-8
# encoded, Windows-1252 decoded copy shows the familiar mojibake ("cafÃ©", "donâ€™t").
ACCENTED_ENGLISH_SENTENCES: tuple[str, ...] = _sentences(
    """
We met at the little café near the station and talked about the résumé she had sent. It’s a
naïve plan, but I don’t think anyone has a better one yet. The façade of the old theatre was
restored last year — it looks brand new. That feeling of déjà vu came back when we walked
past the crème brûlée stand. The chef’s jalapeño sauce won a prize at the fair in São Paulo.
“Keep it simple,” the teacher said, “and test every change you make.” Our coöperative sells
piñatas, crêpes and handmade soaps at the Saturday market. The fiancée wore a blue dress and
the groom’s tie matched it — a nice touch.
"""
)
